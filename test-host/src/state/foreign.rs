//! Envoy's foreign functions (`proxy_call_foreign_function`): `compress` and `uncompress`,
//! zlib streams as Envoy 1.40 makes them with zlib's `compress` / `uncompress` (the
//! arguments are the bytes, the result the other form; a stream that does not inflate is
//! `SerializationFailure`). Any other name is `NotFound`. Leaf: no guest memory.

use std::io::Write as _;

use flate2::write::ZlibEncoder;
use flate2::{Compression, Decompress, FlushDecompress};

use crate::abi::Status;

/// Runs the foreign function `name` on `arguments`.
pub(crate) fn call(name: &str, arguments: &[u8]) -> Result<Vec<u8>, Status> {
    match name {
        "compress" => compress(arguments),
        "uncompress" => uncompress(arguments),
        _ => Err(Status::NotFound),
    }
}

/// zlib's `compress`: a zlib stream at the default level.
fn compress(data: &[u8]) -> Result<Vec<u8>, Status> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .map_err(|_| Status::SerializationFailure)
}

/// zlib's `uncompress`: the bytes of the zlib stream `data` starts with (what follows its end
/// is ignored, as zlib does); a stream that is corrupt, or ends early, is refused.
fn uncompress(data: &[u8]) -> Result<Vec<u8>, Status> {
    let mut stream = Decompress::new(true);
    let mut out = Vec::with_capacity(data.len() * 2 + 2);
    loop {
        let before = (stream.total_in(), stream.total_out());
        let read = usize::try_from(before.0).map_err(|_| Status::SerializationFailure)?;
        let rest = data.get(read..).unwrap_or_default();
        let status = stream
            .decompress_vec(rest, &mut out, FlushDecompress::None)
            .map_err(|_| Status::SerializationFailure)?;
        if status == flate2::Status::StreamEnd {
            return Ok(out);
        }
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        } else if (stream.total_in(), stream.total_out()) == before {
            // Room left, nothing more to read: the stream was cut short (or absent).
            return Err(Status::SerializationFailure);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn compress_gives_zlibs_bytes_and_uncompress_reverses_it() {
        // The bytes zlib's compress() gives (and Envoy 1.40 returned, conformance raw::).
        let packed = call("compress", b"hello hello hello hello").unwrap();
        assert_eq!(
            packed,
            [
                0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x57, 0xc8, 0x40, 0x27, 0x01, 0x68, 0x03,
                0x08, 0xb1
            ]
        );
        assert_eq!(
            call("uncompress", &packed).unwrap(),
            b"hello hello hello hello"
        );
        assert_eq!(
            call("uncompress", b"not zlib").unwrap_err(),
            Status::SerializationFailure
        );
        // As zlib: bytes after the stream are ignored; a stream cut short, or none, is refused.
        let mut trailing = packed.clone();
        trailing.extend_from_slice(b"trailing");
        assert_eq!(
            call("uncompress", &trailing).unwrap(),
            b"hello hello hello hello"
        );
        for short in [&packed[..packed.len() / 2], b""] {
            assert_eq!(
                call("uncompress", short).unwrap_err(),
                Status::SerializationFailure
            );
        }
        // An output many times the input's size grows the buffer.
        let zeros = vec![0u8; 100_000];
        let packed = call("compress", &zeros).unwrap();
        assert_eq!(call("uncompress", &packed).unwrap(), zeros);
        assert_eq!(call("nope", b"").unwrap_err(), Status::NotFound);
    }
}
