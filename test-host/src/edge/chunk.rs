//! Where a chunked request body ends (RFC 9112 section 7.1), so the guard knows where the next
//! request head starts.

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size { size: u64, digits: bool, ext: bool },
    SizeLf { size: u64 },
    Data(u64),
    DataCr,
    DataLf,
    LineStart,
    Trailer,
    FinalLf,
}

/// What feeding bytes to a chunked body found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fed {
    /// All bytes belong to the body; it goes on.
    More,
    /// The body ended after this many bytes.
    End(usize),
    /// The framing is broken: hyper refuses the body (400) and closes.
    Broken,
}

impl Chunk {
    pub(crate) fn start() -> Self {
        Chunk::Size {
            size: 0,
            digits: false,
            ext: false,
        }
    }

    /// Advances over `bytes` (RFC 9112 section 7.1).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Fed {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            *self = match *self {
                Chunk::Data(n) => {
                    let take = n.min((bytes.len() - i) as u64);
                    i += take as usize;
                    *self = if take == n {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(n - take)
                    };
                    continue;
                }
                Chunk::Size { size, digits, ext } => match b {
                    b'\r' if digits => Chunk::SizeLf { size },
                    _ if ext => Chunk::Size { size, digits, ext },
                    b';' | b' ' | b'\t' if digits => Chunk::Size {
                        size,
                        digits,
                        ext: true,
                    },
                    _ => match (b as char).to_digit(16) {
                        Some(d) => match size.checked_mul(16) {
                            Some(s) => Chunk::Size {
                                size: s + u64::from(d),
                                digits: true,
                                ext,
                            },
                            None => return Fed::Broken,
                        },
                        None => return Fed::Broken,
                    },
                },
                Chunk::SizeLf { size } if b == b'\n' => {
                    if size == 0 {
                        Chunk::LineStart
                    } else {
                        Chunk::Data(size)
                    }
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::start(),
                Chunk::LineStart if b == b'\r' => Chunk::FinalLf,
                Chunk::LineStart | Chunk::Trailer if b != b'\n' => Chunk::Trailer,
                Chunk::Trailer => Chunk::LineStart,
                Chunk::FinalLf if b == b'\n' => return Fed::End(i + 1),
                _ => return Fed::Broken,
            };
            i += 1;
        }
        Fed::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_and_trailers_end() {
        let body = b"4;ext=1\r\nwxyz\r\n0\r\nX-T: 1\r\n\r\nGET";
        let mut c = Chunk::start();
        assert_eq!(c.feed(body), Fed::End(body.len() - 3));
        // Byte by byte, the same end.
        let mut c = Chunk::start();
        let ends: Vec<usize> = (0..body.len())
            .filter(|&i| matches!(c.feed(&body[i..=i]), Fed::End(_)))
            .collect();
        assert_eq!(ends, vec![body.len() - 4]);
        assert_eq!(Chunk::start().feed(b"zz\r\n"), Fed::Broken);
        assert_eq!(Chunk::start().feed(b"\r\n"), Fed::Broken);
    }
}
