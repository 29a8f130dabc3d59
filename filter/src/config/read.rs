//! Reading the configuration JSON into a [`RawConfig`]: `serde_json` reads
//! the document (an object's members in order, repeated names kept, each
//! value a `serde_json::Value`), and each field is read by hand, so every
//! error names its field and no message quotes a long value.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::claims::read_claim_headers;
use super::{ConfigError, MAX_QUOTED, RawConfig, RawKey, SecretEncoding, shown};

/// Every field `RawConfig` knows, for the "unknown field" message.
const FIELDS: &str = "`secret`, `secret_env`, `secret_encoding`, `header`, `sign_methods`, \
    `user`, `user_header`, `status_path`, `ttl_seconds`, `issuer`, `audience`, `key_id`, \
    `keys`, `signing_key`, `log_requests`, `claims_from_headers`, `require_claims`, \
    `bind_request`, `jwks_path`, `jwks_max_age_seconds`";

/// Every field of a key in `keys`.
const KEY_FIELDS: &str = "`id`, `secret`, `secret_env`, `encoding`, `alg`, `private_key`, `private_key_env`, `public_key`";

impl RawConfig {
    /// Reads the configuration JSON: an object whose absent fields take
    /// their defaults. Unknown and repeated fields are refused, as serde's
    /// `deny_unknown_fields` would; an empty document means all defaults.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field (or `configuration` for a syntax
    /// error) and the reason; values longer than 24 characters are shown by
    /// length only.
    pub fn from_json(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
        let mut raw = RawConfig::default();
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(raw);
        }
        let members = match serde_json::from_slice(bytes) {
            Ok(Document::Object(members)) => members,
            Ok(Document::Other(kind)) => {
                return Err(ConfigError::new(
                    "configuration",
                    format!("invalid type: {kind}, expected an object"),
                ));
            }
            Err(e) => return Err(ConfigError::new("configuration", e.to_string())),
        };
        let mut seen: Vec<String> = Vec::with_capacity(members.len());
        for (name, node) in members {
            let field = field_name_for_errors(&name);
            if seen.contains(&name) {
                return Err(ConfigError::new(
                    &field,
                    format!("duplicate field `{field}`"),
                ));
            }
            let f = field.as_str();
            let value = match node {
                Node::Documents(docs) => {
                    raw.keys = keys(f, docs)?;
                    seen.push(name);
                    continue;
                }
                Node::Members(members) => {
                    raw.claims_from_headers = read_claim_headers(f, members)?;
                    seen.push(name);
                    continue;
                }
                Node::Value(value) => value,
            };
            match name.as_str() {
                "secret" => raw.secret = optional(f, value, string)?,
                "secret_env" => raw.secret_env = string(f, value)?,
                "secret_encoding" => raw.secret_encoding = encoding(f, value)?,
                "header" => raw.header = string(f, value)?,
                "sign_methods" => raw.sign_methods = strings(f, value)?,
                "user" => raw.user = string(f, value)?,
                "user_header" => raw.user_header = optional(f, value, string)?,
                "status_path" => raw.status_path = string(f, value)?,
                "ttl_seconds" => raw.ttl_seconds = optional(f, value, whole_number)?,
                "issuer" => raw.issuer = optional(f, value, string)?,
                "audience" => raw.audience = optional(f, value, string)?,
                "key_id" => raw.key_id = optional(f, value, string)?,
                "signing_key" => raw.signing_key = optional(f, value, string)?,
                "log_requests" => raw.log_requests = boolean(f, value)?,
                "require_claims" => {
                    raw.require_claims = optional(f, value, strings)?.unwrap_or_default();
                }
                "bind_request" => raw.bind_request = boolean(f, value)?,
                "jwks_path" => raw.jwks_path = string(f, value)?,
                "jwks_max_age_seconds" => raw.jwks_max_age_seconds = whole_number(f, value)?,
                _ => {
                    return Err(ConfigError::new(
                        f,
                        format!("unknown field `{field}`, expected one of {FIELDS}"),
                    ));
                }
            }
            seen.push(name);
        }
        Ok(raw)
    }
}

/// The configuration document as `serde_json` reads it: an object's members
/// in document order, duplicates kept (a `serde_json::Value` object keeps
/// only the last of a repeated name, so a repeated field could not be
/// refused), or the kind of any other value.
enum Document {
    Object(Vec<(String, Node)>),
    Other(&'static str),
}

/// A member's value: a `serde_json::Value`, except `keys`, whose objects are
/// read as documents too, so a key's repeated field is refused like any
/// other. `Documents` holds `None` for `null`, else the array's documents or
/// the kind of the value that is not an array. `claims_from_headers` is read
/// as `Members`: its order is the claims' order in the token, and a
/// `serde_json::Value` object neither keeps the order (without serde_json's
/// `preserve_order`) nor a repeated name.
enum Node {
    Value(Value),
    Documents(Option<Result<Vec<Document>, &'static str>>),
    Members(Option<Result<Vec<(String, Value)>, &'static str>>),
}

/// The value of `claims_from_headers`, read by [`MembersVisitor`].
struct Members(Option<Result<Vec<(String, Value)>, &'static str>>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MembersVisitor)
    }
}

/// Takes an object's members in document order, repeated names kept,
/// `null`, or any other kind (to be refused with a message of our own).
struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Value>()? {
            members.push(member);
        }
        Ok(Members(Some(Ok(members))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Members, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Members(Some(Err("an array"))))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Members, E> {
        Ok(Members(Some(Err("a string"))))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Members, E> {
        Ok(Members(Some(Err("a boolean"))))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Members, E> {
        Ok(Members(Some(Err("a number"))))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Members, E> {
        Ok(Members(Some(Err("a number"))))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Members, E> {
        Ok(Members(Some(Err("a number"))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Members, E> {
        Ok(Members(None))
    }
}

/// The value of `keys`, read by [`DocumentsVisitor`].
struct Documents(Option<Result<Vec<Document>, &'static str>>);

impl<'de> Deserialize<'de> for Documents {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentsVisitor)
    }
}

/// Takes an array of documents, `null`, or any other kind (to be refused
/// with a message of our own).
struct DocumentsVisitor;

impl<'de> Visitor<'de> for DocumentsVisitor {
    type Value = Documents;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of keys")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Documents, A::Error> {
        let mut docs = Vec::new();
        while let Some(doc) = seq.next_element::<Document>()? {
            docs.push(doc);
        }
        Ok(Documents(Some(Ok(docs))))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Documents, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Documents(Some(Err("an object"))))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Documents, E> {
        Ok(Documents(Some(Err("a string"))))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Documents, E> {
        Ok(Documents(Some(Err("a boolean"))))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Documents, E> {
        Ok(Documents(Some(Err("a number"))))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Documents, E> {
        Ok(Documents(Some(Err("a number"))))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Documents, E> {
        Ok(Documents(Some(Err("a number"))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Documents, E> {
        Ok(Documents(None))
    }
}

/// `keys`: each element a key object.
fn keys(
    field: &str,
    docs: Option<Result<Vec<Document>, &'static str>>,
) -> Result<Option<Vec<RawKey>>, ConfigError> {
    match docs {
        None => Ok(None),
        Some(Err(kind)) => Err(ConfigError::new(
            field,
            format!("invalid type: {kind}, expected an array of keys"),
        )),
        Some(Ok(docs)) => docs
            .into_iter()
            .enumerate()
            .map(|(i, doc)| key(&format!("{field}[{i}]"), doc))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
    }
}

/// One key object of `keys`, its fields named `keys[i].NAME` in errors.
fn key(field: &str, doc: Document) -> Result<RawKey, ConfigError> {
    let members = match doc {
        Document::Object(members) => members,
        Document::Other(kind) => {
            return Err(ConfigError::new(
                field,
                format!("invalid type: {kind}, expected an object with {KEY_FIELDS}"),
            ));
        }
    };
    let mut key = RawKey::default();
    let mut seen: Vec<String> = Vec::with_capacity(members.len());
    for (name, node) in members {
        let sub = format!("{field}.{}", field_name_for_errors(&name));
        if seen.contains(&name) {
            return Err(ConfigError::new(&sub, format!("duplicate field `{sub}`")));
        }
        let value = match node {
            Node::Value(value) => value,
            Node::Documents(_) | Node::Members(_) => Value::Null,
        };
        let f = sub.as_str();
        match name.as_str() {
            "id" => key.id = optional(f, value, string)?,
            "secret" => key.secret = optional(f, value, string)?,
            "secret_env" => key.secret_env = optional(f, value, string)?,
            "encoding" => key.encoding = Some(encoding(f, value)?),
            "alg" => key.alg = optional(f, value, string)?,
            "private_key" => key.private_key = optional(f, value, string)?,
            "private_key_env" => key.private_key_env = optional(f, value, string)?,
            "public_key" => key.public_key = optional(f, value, string)?,
            _ => {
                return Err(ConfigError::new(
                    f,
                    format!("unknown field `{sub}`, expected one of {KEY_FIELDS}"),
                ));
            }
        }
        seen.push(name);
    }
    Ok(key)
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

/// Takes every kind of value: serde's default for a kind a visitor does not
/// take is an "invalid type" error, and formatting one links float
/// formatting (24 KB of Wasm).
struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut members = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let node = if name == "keys" {
                Node::Documents(map.next_value::<Documents>()?.0)
            } else if name == "claims_from_headers" {
                Node::Members(map.next_value::<Members>()?.0)
            } else {
                Node::Value(map.next_value()?)
            };
            members.push((name, node));
        }
        Ok(Document::Object(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Document::Other("an array"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Document, E> {
        Ok(Document::Other("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Document, E> {
        Ok(Document::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Other("null"))
    }
}

/// What kind of value this is, for "invalid type" messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field name as errors show it: long names (a key pasted as a name)
/// by length only, the empty name described.
fn field_name_for_errors(name: &str) -> String {
    let chars = name.chars().count();
    if name.is_empty() {
        "(empty field name)".to_owned()
    } else if chars > MAX_QUOTED {
        format!("<unknown field of {chars} characters>")
    } else {
        name.to_owned()
    }
}

/// "invalid type" for a value of the wrong kind; a string or a whole number
/// is quoted (or its length shown, see [`shown`]). Other numbers are not:
/// only their float value is known, and float formatting is 24 KB of Wasm.
fn invalid_type(field: &str, value: &Value, expected: &str) -> ConfigError {
    let found = match value {
        Value::String(s) => format!("string {}", shown(s)),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(n), _) => format!("number {}", shown(&n.to_string())),
            (_, Some(n)) => format!("number {}", shown(&n.to_string())),
            _ => "a number".to_owned(),
        },
        Value::Bool(b) => format!("boolean `{b}`"),
        other => kind(other).to_owned(),
    };
    ConfigError::new(field, format!("invalid type: {found}, expected {expected}"))
}

pub(super) fn string(field: &str, value: Value) -> Result<String, ConfigError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(invalid_type(field, &other, "a string")),
    }
}

fn boolean(field: &str, value: Value) -> Result<bool, ConfigError> {
    match value {
        Value::Bool(b) => Ok(b),
        other => Err(invalid_type(field, &other, "a boolean")),
    }
}

fn strings(field: &str, value: Value) -> Result<Vec<String>, ConfigError> {
    match value {
        Value::Array(items) => items.into_iter().map(|v| string(field, v)).collect(),
        other => Err(invalid_type(field, &other, "an array of strings")),
    }
}

/// `serde_json` reads a number with a fraction or an exponent, or beyond
/// the 64-bit integers, as a float; such a number is described, not shown.
fn whole_number(field: &str, value: Value) -> Result<u64, ConfigError> {
    let Value::Number(n) = &value else {
        return Err(invalid_type(field, &value, "a whole number"));
    };
    if let Some(n) = n.as_u64() {
        return Ok(n);
    }
    let found = match (n.as_i64(), n.as_f64()) {
        (Some(negative), _) => shown(&negative.to_string()),
        (_, Some(f)) if f >= 18_446_744_073_709_551_616.0 => {
            format!("a number larger than {}", u64::MAX)
        }
        (_, Some(f)) if f.is_sign_negative() => "a negative number".to_owned(),
        _ => "a number with a fraction or an exponent".to_owned(),
    };
    Err(ConfigError::new(
        field,
        format!("invalid value: {found}, expected a whole number"),
    ))
}

fn encoding(field: &str, value: Value) -> Result<SecretEncoding, ConfigError> {
    match string(field, value)?.as_str() {
        "utf8" => Ok(SecretEncoding::Utf8),
        "hex" => Ok(SecretEncoding::Hex),
        other => Err(ConfigError::new(
            field,
            format!("unknown variant {}, expected `utf8` or `hex`", shown(other)),
        )),
    }
}

/// `null` or absent is `None`; anything else must be what `read` reads.
fn optional<T>(
    field: &str,
    value: Value,
    read: fn(&str, Value) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    match value {
        Value::Null => Ok(None),
        other => read(field, other).map(Some),
    }
}
