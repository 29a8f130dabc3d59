//! A small JSON reader (RFC 8259) for the plugin configuration.
//!
//! The configuration is read once per VM, so this reader is built for size
//! and clear errors, not speed: it replaced `serde_json` +
//! `serde_path_to_error`, which were about 80 KB of the 298 KB module
//! (issue 4, `.wasm` ≤ 150 KB). Numbers are kept as their text, so no float
//! parsing or printing is linked in; the caller decides what a number may be.
//!
//! Checked against `serde_json` on arbitrary documents in
//! `filter/tests/proptest.rs`.

/// A parsed JSON value. Objects keep their members in document order,
/// duplicates included (the caller refuses them, naming the key).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, as written (validated against the JSON grammar).
    Number(String),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object: its members in document order.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// What kind of value this is, for "invalid type" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

/// Deepest nesting of arrays and objects accepted (`serde_json` allows 128;
/// a configuration needs 2). Bounds the reader's recursion.
pub const MAX_DEPTH: usize = 32;

/// A syntax error: what was expected, and where (1-based line and column,
/// counted in characters as `serde_json` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What is wrong, e.g. ``expected `:` ``.
    pub message: &'static str,
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column of the error.
    pub column: usize,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

impl std::error::Error for SyntaxError {}

/// Parses one JSON document (whitespace around it allowed).
///
/// # Errors
/// A [`SyntaxError`] at the first byte that breaks the grammar: invalid
/// UTF-8, a bad escape or number, nesting deeper than [`MAX_DEPTH`], or
/// trailing characters.
pub fn parse(bytes: &[u8]) -> Result<Value, SyntaxError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return Err(error_at(bytes, e.valid_up_to(), "invalid UTF-8")),
    };
    let mut reader = Reader {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let value = reader.value(0);
    let value = value.and_then(|v| {
        reader.skip_whitespace();
        if reader.pos == reader.bytes.len() {
            Ok(v)
        } else {
            Err("trailing characters")
        }
    });
    value.map_err(|message| error_at(bytes, reader.pos, message))
}

fn error_at(bytes: &[u8], pos: usize, message: &'static str) -> SyntaxError {
    let before = &bytes[..pos.min(bytes.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    // Characters, not bytes: count the bytes that start a UTF-8 sequence.
    let column = 1 + before[line_start..]
        .iter()
        .filter(|&&b| b & 0xc0 != 0x80)
        .count();
    SyntaxError {
        message,
        line,
        column,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type Step<T> = Result<T, &'static str>;

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `word` (after its first byte was seen) or fails.
    fn literal(&mut self, word: &[u8], value: Value) -> Step<Value> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err("expected value")
        }
    }

    fn value(&mut self, depth: usize) -> Step<Value> {
        self.skip_whitespace();
        match self.peek() {
            None => Err("EOF while parsing a value"),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(_) => Err("expected value"),
        }
    }

    fn array(&mut self, depth: usize) -> Step<Value> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply");
        }
        self.pos += 1; // [
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                None => return Err("EOF while parsing a list"),
                Some(_) => return Err("expected `,` or `]`"),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Step<Value> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply");
        }
        self.pos += 1; // {
        let mut members = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_whitespace();
            match self.peek() {
                Some(b'"') => {}
                None => return Err("EOF while parsing an object"),
                Some(_) => return Err("key must be a string"),
            }
            let key = self.string()?;
            self.skip_whitespace();
            match self.peek() {
                Some(b':') => self.pos += 1,
                None => return Err("EOF while parsing an object"),
                Some(_) => return Err("expected `:`"),
            }
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                None => return Err("EOF while parsing an object"),
                Some(_) => return Err("expected `,` or `}`"),
            }
        }
    }

    /// A number, validated against RFC 8259's grammar and kept as text.
    fn number(&mut self) -> Step<Value> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err("invalid number");
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err("invalid number");
            }
            self.digits();
        }
        // Only ASCII was consumed, so this slice is on char boundaries.
        let text = String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned();
        Ok(Value::Number(text))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    /// A string (the opening quote not yet consumed), unescaped.
    fn string(&mut self) -> Step<String> {
        self.pos += 1; // "
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err("EOF while parsing a string");
            };
            match b {
                b'"' => {
                    self.pos += 1;
                    // The input is valid UTF-8 and escapes add whole chars.
                    return String::from_utf8(out).map_err(|_| "invalid UTF-8");
                }
                b'\\' => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                0x00..=0x1f => return Err("control character in string"),
                _ => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    /// One escape sequence (after the backslash), appended as UTF-8.
    fn escape(&mut self, out: &mut Vec<u8>) -> Step<()> {
        let Some(b) = self.peek() else {
            return Err("EOF while parsing a string");
        };
        self.pos += 1;
        let simple = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let c = self.unicode_escape()?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            _ => return Err("invalid escape"),
        };
        out.push(simple);
        Ok(())
    }

    /// `\uXXXX` (after the `u`), with a surrogate pair when it takes two.
    fn unicode_escape(&mut self) -> Step<char> {
        let first = self.hex4()?;
        let code = match first {
            0xd800..=0xdbff => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err("lone leading surrogate in hex escape");
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err("lone leading surrogate in hex escape");
                }
                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            }
            0xdc00..=0xdfff => return Err("lone trailing surrogate in hex escape"),
            code => code,
        };
        char::from_u32(code).ok_or("invalid unicode code point")
    }

    fn hex4(&mut self) -> Step<u32> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                None => return Err("EOF while parsing a string"),
                Some(_) => return Err("invalid escape"),
            };
            code = code * 16 + u32::from(digit);
            self.pos += 1;
        }
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.to_owned())
    }

    #[test]
    fn reads_every_kind_of_value() {
        let v = parse(br#" {"a": [1, -0.5e+3, true, false, null], "b": {"c": "d"}} "#).unwrap();
        assert_eq!(
            v,
            Value::Object(vec![
                (
                    "a".into(),
                    Value::Array(vec![
                        Value::Number("1".into()),
                        Value::Number("-0.5e+3".into()),
                        Value::Bool(true),
                        Value::Bool(false),
                        Value::Null,
                    ])
                ),
                ("b".into(), Value::Object(vec![("c".into(), s("d"))])),
            ])
        );
        assert_eq!(parse(b"[]").unwrap(), Value::Array(vec![]));
        assert_eq!(parse(b"{}").unwrap(), Value::Object(vec![]));
    }

    #[test]
    fn unescapes_strings() {
        assert_eq!(
            parse(br#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00""#).unwrap(),
            s("a\"b\\c/d\u{8}\u{c}\n\r\té😀")
        );
        assert_eq!(parse("\"é😀\"".as_bytes()).unwrap(), s("é😀"));
    }

    #[test]
    fn keeps_duplicate_keys_in_order() {
        let v = parse(br#"{"a":1,"a":2}"#).unwrap();
        let Value::Object(members) = v else {
            panic!("not an object")
        };
        assert_eq!(members.len(), 2);
        assert_eq!(members[1], ("a".into(), Value::Number("2".into())));
    }

    #[test]
    fn refuses_what_rfc_8259_refuses() {
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\u12\"",
            "\"a\nb\"",
            "tru",
            "nul",
            "[1 2]",
            "{\"a\" 1}",
            "{} x",
            "NaN",
            "\"abc",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "accepted {bad:?}");
        }
        assert!(parse(b"\"\xff\"").is_err());
    }

    #[test]
    fn errors_say_where() {
        let e = parse(b"{\n  \"a\": tru\n}").unwrap_err();
        assert_eq!((e.message, e.line, e.column), ("expected value", 2, 8));
        assert_eq!(e.to_string(), "expected value at line 2 column 8");
        let e = parse("{\"é\" 1}".as_bytes()).unwrap_err();
        assert_eq!((e.message, e.column), ("expected `:`", 6));
        assert_eq!(parse(b"{} x").unwrap_err().message, "trailing characters");
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse(deep.as_bytes()).unwrap_err().message,
            "nested too deeply"
        );
        // Far deeper than the stack would allow, refused without recursing.
        let hostile = "[".repeat(1_000_000);
        assert_eq!(
            parse(hostile.as_bytes()).unwrap_err().message,
            "nested too deeply"
        );
    }
}
