//! Header maps as a stream holds them: request/response headers and trailers, and the ABI's
//! serialized map format (`proxy_*_header_map_*` decode and encode through it).
//!
//! Names are stored lowercase and compared case-insensitively, like Envoy's header maps; values
//! are bytes. Pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`, `:status`) live in the
//! maps as in Envoy. "Replace" drops every value of the name and sets one; "get value" returns
//! the first value.

/// An ordered multimap of lowercase header names to byte values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderList {
    entries: Vec<(String, Vec<u8>)>,
}

impl HeaderList {
    /// An empty list.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list from `(name, value)` pairs, lowercasing names.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut list = Self::new();
        for (name, value) in pairs {
            list.add(name.as_ref(), value.as_ref());
        }
        list
    }

    /// The first value of `name` (any letter case).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as text, if it is UTF-8.
    #[must_use]
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    #[must_use]
    pub fn get_all(&self, name: &str) -> Vec<&[u8]> {
        self.entries
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// Appends a value.
    pub fn add(&mut self, name: &str, value: &[u8]) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// Removes every value of `name`, then sets `value` (at the position of the first one).
    pub fn replace(&mut self, name: &str, value: &[u8]) {
        let position = self
            .entries
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name));
        self.remove(name);
        let entry = (name.to_ascii_lowercase(), value.to_vec());
        match position {
            Some(i) => self.entries.insert(i, entry),
            None => self.entries.push(entry),
        }
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Number of entries (a name with two values counts twice).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries as text pairs (values decoded lossily).
    #[must_use]
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| (n.to_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    /// Serializes in the ABI's map format: count, (name length, value length) pairs, then each
    /// name and value NUL-terminated; all integers little-endian `u32`.
    #[must_use]
    pub(crate) fn serialize(&self) -> Vec<u8> {
        let size = 4 + self
            .entries
            .iter()
            .map(|(n, v)| 10 + n.len() + v.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (n, v) in &self.entries {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (n, v) in &self.entries {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    /// Parses the ABI's map format; `None` when it is malformed. Empty input is an empty map.
    #[must_use]
    pub(crate) fn deserialize(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Self::new());
        }
        let u32_at = |at: usize| -> Option<usize> {
            let b = bytes.get(at..at.checked_add(4)?)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let count = u32_at(0)?;
        let mut data = 4usize.checked_add(count.checked_mul(8)?)?;
        if data > bytes.len() {
            return None;
        }
        let mut list = Self::new();
        for i in 0..count {
            let name_len = u32_at(4 + i * 8)?;
            let value_len = u32_at(8 + i * 8)?;
            let name = bytes.get(data..data.checked_add(name_len)?)?;
            data = data.checked_add(name_len + 1)?;
            let value = bytes.get(data..data.checked_add(value_len)?)?;
            data = data.checked_add(value_len + 1)?;
            list.add(&String::from_utf8_lossy(name), value);
        }
        Some(list)
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderList;

    #[test]
    fn serialization_round_trips() {
        let list = HeaderList::from_pairs([(":path", "/a"), ("X-A", "1"), ("x-a", "")]);
        let back = HeaderList::deserialize(&list.serialize());
        assert_eq!(back, Some(list));
    }

    #[test]
    fn malformed_maps_are_rejected() {
        assert_eq!(HeaderList::deserialize(&[5, 0, 0, 0, 1]), None);
        assert_eq!(
            HeaderList::deserialize(&[1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, b'a', 0]),
            None
        );
    }

    #[test]
    fn replace_drops_every_value_and_keeps_position() {
        let mut list = HeaderList::from_pairs([("a", "1"), ("B", "2"), ("b", "3"), ("c", "4")]);
        list.replace("b", b"9");
        assert_eq!(
            list.to_pairs(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "9".into()),
                ("c".into(), "4".into())
            ]
        );
    }
}
