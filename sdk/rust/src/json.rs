//! Reading one field of a large JSON document without parsing the rest.
//!
//! A policy that needs one field of an object (its labels, say) pays for every byte it parses:
//! a Pod as the API server hands it carries `managedFields`, `spec` and `status`, several KB a
//! policy never looks at. [`find`] walks the document's text down a path of object keys and
//! stops at the value: what comes before it is skipped by its structure (strings, brackets),
//! nothing after it is read, and nothing is allocated.
//!
//! ```
//! use capstan_plugin_sdk::json;
//!
//! let pod = r#"{"kind":"Pod","metadata":{"name":"web","labels":{"app":"web"}},"spec":{}}"#;
//! assert_eq!(json::find(pod, &["metadata", "labels", "app"]), Ok(Some(r#""web""#)));
//! assert_eq!(json::find(pod, &["metadata", "labels", "team"]), Ok(None));
//! let labels: std::collections::BTreeMap<String, String> =
//!     serde_json::from_str(json::find(pod, &["metadata", "labels"]).unwrap().unwrap()).unwrap();
//! ```
//!
//! The text is trusted to be JSON (the API server has parsed it); structural errors met on the
//! way are reported, but what lies past the value is not checked.

use std::borrow::Cow;
use std::fmt;

/// Where and why a document is not the JSON [`find`] expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Byte offset in the document.
    pub offset: usize,
    /// What was expected there.
    pub expected: &'static str,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {} at byte {}", self.expected, self.offset)
    }
}

impl std::error::Error for Error {}

/// The JSON text of the value at `path` (object keys, outermost first) in `document`: `None`
/// when a key is missing or a value on the way is not an object (`null` labels, say). An empty
/// path returns the whole document's value.
pub fn find<'a>(document: &'a str, path: &[&str]) -> Result<Option<&'a str>, Error> {
    let mut cursor = Cursor { document, at: 0 };
    let mut path = path.iter();
    loop {
        cursor.whitespace();
        let Some(key) = path.next() else {
            let start = cursor.at;
            cursor.value()?;
            return Ok(Some(&document[start..cursor.at]));
        };
        match cursor.peek() {
            Some(b'{') => {}
            Some(_) => return Ok(None),
            None => return cursor.fail("a JSON value"),
        }
        if !cursor.enter_member(key)? {
            return Ok(None);
        }
    }
}

struct Cursor<'a> {
    document: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.document.as_bytes().get(self.at).copied()
    }

    fn fail<T>(&self, expected: &'static str) -> Result<T, Error> {
        Err(Error { offset: self.at, expected })
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), Error> {
        self.whitespace();
        if self.peek() != Some(byte) {
            return self.fail(expected);
        }
        self.at += 1;
        Ok(())
    }

    /// At an object's `{`: moves to the value of member `key` and returns true, or past the
    /// object's `}` and returns false.
    fn enter_member(&mut self, key: &str) -> Result<bool, Error> {
        self.expect(b'{', "`{`")?;
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(false);
        }
        loop {
            self.whitespace();
            let name = self.string()?;
            self.expect(b':', "`:` after an object key")?;
            if name == key {
                return Ok(true);
            }
            self.value()?;
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(false);
                }
                _ => return self.fail("`,` or `}` in an object"),
            }
        }
    }

    /// Skips one value of any kind.
    fn value(&mut self) -> Result<(), Error> {
        self.whitespace();
        match self.peek() {
            Some(b'"') => self.skip_string().map(drop),
            Some(b'{' | b'[') => self.nested(),
            Some(b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'E')) {
                    self.at += 1;
                }
                Ok(())
            }
            _ => self.fail("a JSON value"),
        }
    }

    /// Skips an object or array, whatever it nests.
    fn nested(&mut self) -> Result<(), Error> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                Some(b'{' | b'[') => depth += 1,
                Some(b'}' | b']') => {
                    depth -= 1;
                    if depth == 0 {
                        self.at += 1;
                        return Ok(());
                    }
                }
                Some(b'"') => {
                    self.skip_string()?;
                    continue;
                }
                Some(_) => {}
                None => return self.fail("the end of an object or array"),
            }
            self.at += 1;
        }
    }

    /// Reads a string at its opening quote, unescaped only when it holds escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, Error> {
        let start = self.at + 1;
        let escaped = self.skip_string()?;
        // Quotes are ASCII, so the text between them lies on character boundaries of the
        // (already valid UTF-8) document: slicing it needs no validation.
        let raw = &self.document[start - 1..self.at];
        if escaped {
            let decoded: String =
                serde_json::from_str(raw).map_err(|_| Error { offset: start, expected: "a string" })?;
            return Ok(Cow::Owned(decoded));
        }
        Ok(Cow::Borrowed(&raw[1..raw.len() - 1]))
    }

    /// Moves past a string; whether it holds escapes.
    fn skip_string(&mut self) -> Result<bool, Error> {
        if self.peek() != Some(b'"') {
            return self.fail("a string");
        }
        let mut escaped = false;
        let mut at = self.at + 1;
        loop {
            match self.document.as_bytes().get(at) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    at += 2;
                }
                Some(_) => at += 1,
                None => {
                    self.at = at;
                    return self.fail("the end of a string");
                }
            }
        }
        self.at = at + 1;
        Ok(escaped)
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, find};

    const POD: &str = r#" {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"annotations": {"note": "a \"quoted\" } brace", "x": "[{"},
                     "labels": {"app": "web", "tier": "", "esc\u0061ped": "yes"},
                     "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:metadata": {}}}],
                     "name": "web"},
        "spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80}], "ok": true}], "n": -1.5e3},
        "status": null
    } "#;

    #[test]
    fn finds_values_along_a_path_of_keys() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["metadata", "labels", "app"], Some(r#""web""#)),
            (&["metadata", "labels", "tier"], Some(r#""""#)),
            (&["metadata", "labels", "escaped"], Some(r#""yes""#)),
            (&["metadata", "labels", "team"], None),
            (&["metadata", "name"], Some(r#""web""#)),
            (&["kind"], Some(r#""Pod""#)),
            (&["spec", "n"], Some("-1.5e3")),
            (&["status"], Some("null")),
            // A value on the way that is not an object holds no keys.
            (&["status", "phase"], None),
            (&["kind", "x"], None),
            (&["spec", "containers", "name"], None),
            (&["nothing"], None),
            (&["metadata", "annotations", "note"], Some(r#""a \"quoted\" } brace""#)),
        ];
        for (path, expected) in cases {
            assert_eq!(find(POD, path), Ok(*expected), "{path:?}");
        }
        let labels = find(POD, &["metadata", "labels"]).ok().flatten().unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(labels).unwrap_or_default();
        assert_eq!(parsed["app"], "web");
        let spec = find(POD, &["spec"]).ok().flatten().unwrap_or_default();
        assert!(spec.starts_with("{\"containers\"") && spec.ends_with("-1.5e3}"), "{spec}");
        assert_eq!(find(" [1] ", &[]), Ok(Some("[1]")));
    }

    #[test]
    fn reports_where_the_structure_breaks() {
        let cases: &[(&str, &[&str], usize)] = &[
            (r#"{"metadata": "#, &["metadata", "labels"], 13),
            (r#"{"a" 1}"#, &["b"], 5),
            (r#"{"a": 1 "b": 2}"#, &["b"], 8),
            (r#"{"a": "unterminated"#, &["b"], 19),
            (r#"{"a": [1, {"b": 2}"#, &["c"], 18),
            (r#"{"a": }"#, &["b"], 6),
        ];
        for (document, path, offset) in cases {
            match find(document, path) {
                Err(Error { offset: at, .. }) => assert_eq!(at, *offset, "{document}"),
                other => panic!("{document}: {other:?}"),
            }
        }
    }
}
