//! Label selectors: the `labelSelector` query grammar and `metav1.LabelSelector` objects.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::SelectorError;

/// Label keys' name part and label values are at most this long.
const MAX_NAME_LENGTH: usize = 63;
/// A label key's DNS-subdomain prefix is at most this long.
const MAX_PREFIX_LENGTH: usize = 253;

/// Requirements on an object's labels that must all hold, such as `app=web,tier notin (db)`.
///
/// An empty selector matches every object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// Set for a null `metav1.LabelSelector`, which selects nothing; an empty one selects
    /// everything, and controllers must not confuse the two.
    nothing: bool,
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
    /// `a notin (x)`, `a`, `!a`, `a>1`, `a<1`, joined by `,`. Whitespace between tokens is
    /// ignored; keys and values are validated as label keys and values.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let requirements = Parser { text, tokens: lex(text), position: 0 }.selector()?;
        Ok(Self { requirements, nothing: false })
    }

    /// Builds a selector from a `metav1.LabelSelector` in JSON form:
    /// `{"matchLabels": {..}, "matchExpressions": [{"key", "operator", "values"}]}`.
    ///
    /// JSON `null` (an absent selector) matches nothing; `{}` matches everything.
    pub fn from_json(selector: &Value) -> Result<Self, SelectorError> {
        let object = match selector {
            Value::Null => return Ok(Self { requirements: Vec::new(), nothing: true }),
            Value::Object(object) => object,
            _ => return Err(invalid_object("expected an object with matchLabels and matchExpressions")),
        };
        let mut requirements = Vec::new();
        if let Some(labels) = object.get("matchLabels").filter(|v| !v.is_null()) {
            let labels = labels.as_object().ok_or_else(|| invalid_object("matchLabels must be a map of strings"))?;
            for (key, value) in labels {
                let value = value.as_str().ok_or_else(|| invalid_object("matchLabels must be a map of strings"))?;
                requirements.push(Requirement::new(key.clone(), Operator::Equals, vec![value.to_owned()])?);
            }
        }
        if let Some(expressions) = object.get("matchExpressions").filter(|v| !v.is_null()) {
            let expressions =
                expressions.as_array().ok_or_else(|| invalid_object("matchExpressions must be a list"))?;
            for expression in expressions {
                requirements.push(Requirement::from_json(expression)?);
            }
        }
        Ok(Self { requirements, nothing: false })
    }

    /// Whether `labels` satisfy every requirement.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|key| labels.get(key).map(String::as_str))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    #[must_use]
    pub fn matches_object(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.matches_with(|key| labels.and_then(|labels| labels.get(key)).and_then(Value::as_str))
    }

    /// Whether the selector has no requirements, and so matches everything.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.nothing && self.requirements.iter().all(|requirement| requirement.matches(label(&requirement.key)))
    }
}

/// Renders the selector as upstream does: requirements sorted by key, set values sorted.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted: Vec<&Requirement> = self.requirements.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        for (index, requirement) in sorted.into_iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Validates the key, the values, and that the operator has the values it needs.
    fn new(key: String, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        validate_key(&key)?;
        let wrong = |reason: &str| SelectorError::InvalidRequirement { key: key.clone(), reason: reason.to_owned() };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(wrong("the values set can't be empty for 'in' and 'notin'"));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
                return Err(wrong("an exact match needs exactly one value"));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(wrong("the values set must be empty for 'Exists' and 'DoesNotExist'"));
            }
            Operator::GreaterThan | Operator::LessThan if values.len() != 1 || values[0].parse::<i64>().is_err() => {
                return Err(wrong("'>' and '<' need exactly one integer value"));
            }
            _ => {}
        }
        for value in &values {
            validate_value(&key, value)?;
        }
        Ok(Self { key, operator, values })
    }

    fn from_json(expression: &Value) -> Result<Self, SelectorError> {
        let key = expression
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_object("matchExpressions[].key must be a string"))?;
        let operator = match expression.get("operator").and_then(Value::as_str) {
            Some("In") => Operator::In,
            Some("NotIn") => Operator::NotIn,
            Some("Exists") => Operator::Exists,
            Some("DoesNotExist") => Operator::DoesNotExist,
            Some(other) => {
                return Err(SelectorError::InvalidRequirement {
                    key: key.to_owned(),
                    reason: format!("{other:?} is not a valid label selector operator"),
                });
            }
            None => return Err(invalid_object("matchExpressions[].operator must be a string")),
        };
        let values =
            match expression.get("values") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(values)) => values
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| invalid_object("matchExpressions[].values must be a list of strings"))?,
                Some(_) => return Err(invalid_object("matchExpressions[].values must be a list of strings")),
            };
        Self::new(key.to_owned(), operator, values)
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|value| self.values.iter().any(|v| v == value))
            }
            // Objects without the label satisfy negative requirements, as upstream.
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|value| self.values.iter().all(|v| v != value)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(Ok(actual)), Ok(bound)) = (value.map(str::parse::<i64>), self.values[0].parse::<i64>())
                else {
                    return false;
                };
                if self.operator == Operator::GreaterThan { actual > bound } else { actual < bound }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let single = self.values.first().map_or("", String::as_str);
        match self.operator {
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
            Operator::Equals => write!(f, "{key}={single}"),
            Operator::DoubleEquals => write!(f, "{key}=={single}"),
            Operator::NotEquals => write!(f, "{key}!={single}"),
            Operator::GreaterThan => write!(f, "{key}>{single}"),
            Operator::LessThan => write!(f, "{key}<{single}"),
            Operator::In | Operator::NotIn => {
                let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
                values.sort_unstable();
                let keyword = if self.operator == Operator::In { "in" } else { "notin" };
                write!(f, "{key} {keyword} ({})", values.join(","))
            }
        }
    }
}

fn invalid_object(reason: &str) -> SelectorError {
    SelectorError::InvalidObject(reason.to_owned())
}

// --- Validation, as k8s.io/apimachinery/pkg/util/validation does it.

const NAME_RULE: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn validate_key(key: &str) -> Result<(), SelectorError> {
    let invalid = |reason: String| SelectorError::InvalidKey { key: key.to_owned(), reason };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.contains('/') {
        return Err(invalid("a label key is a name with an optional DNS subdomain prefix and one '/'".into()));
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(invalid("prefix part must be non-empty".into()));
        }
        if prefix.len() > MAX_PREFIX_LENGTH || !is_dns_subdomain(prefix) {
            return Err(invalid(format!(
                "prefix part must be a lowercase DNS subdomain of at most {MAX_PREFIX_LENGTH} characters"
            )));
        }
    }
    if name.is_empty() {
        return Err(invalid("name part must be non-empty".into()));
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(invalid(format!("name part must be no more than {MAX_NAME_LENGTH} characters")));
    }
    if !is_qualified_name(name) {
        return Err(invalid(format!("name part {NAME_RULE}")));
    }
    Ok(())
}

fn validate_value(key: &str, value: &str) -> Result<(), SelectorError> {
    let invalid = |reason: String| SelectorError::InvalidValue { key: key.to_owned(), value: value.to_owned(), reason };
    if value.len() > MAX_NAME_LENGTH {
        return Err(invalid(format!("must be no more than {MAX_NAME_LENGTH} characters")));
    }
    if !value.is_empty() && !is_qualified_name(value) {
        return Err(invalid(format!("must be empty or {NAME_RULE}")));
    }
    Ok(())
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn is_qualified_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else { return false };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Dot-separated `[a-z0-9]([-a-z0-9]*[a-z0-9])?` labels.
fn is_dns_subdomain(text: &str) -> bool {
    text.split('.').all(|label| {
        let bytes = label.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else { return false };
        let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        alphanumeric(first) && alphanumeric(last) && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
    })
}

// --- The grammar.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Identifier(String),
    In,
    NotIn,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    OpenParen,
    CloseParen,
    Comma,
    End,
}

impl Token {
    /// Outside operator position `in` and `notin` are ordinary words (a key or value may be `in`).
    fn into_word(self) -> Self {
        match self {
            Token::In => Token::Identifier("in".into()),
            Token::NotIn => Token::Identifier("notin".into()),
            other => other,
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Token::Identifier(word) => word,
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::OpenParen => "(",
            Token::CloseParen => ")",
            Token::Comma => ",",
            Token::End => "end of string",
        })
    }
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '>' | '<')
}

fn lex(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if is_whitespace(c) {
            continue;
        }
        let token = match c {
            '!' if chars.next_if_eq(&'=').is_some() => Token::NotEquals,
            '=' if chars.next_if_eq(&'=').is_some() => Token::DoubleEquals,
            '!' => Token::Bang,
            '=' => Token::Equals,
            '(' => Token::OpenParen,
            ')' => Token::CloseParen,
            ',' => Token::Comma,
            '>' => Token::GreaterThan,
            '<' => Token::LessThan,
            _ => {
                let mut word = String::from(c);
                while let Some(next) = chars.next_if(|&next| !is_whitespace(next) && !is_special(next)) {
                    word.push(next);
                }
                match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Identifier(word),
                }
            }
        };
        tokens.push(token);
    }
    tokens.push(Token::End);
    tokens
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    position: usize,
}

impl Parser<'_> {
    fn peek_word(&self) -> Token {
        self.tokens.get(self.position).cloned().unwrap_or(Token::End).into_word()
    }

    fn next(&mut self) -> Token {
        let token = self.tokens.get(self.position).cloned().unwrap_or(Token::End);
        self.position += 1;
        token
    }

    fn next_word(&mut self) -> Token {
        self.next().into_word()
    }

    fn unexpected(&self, found: &Token, expected: &str) -> SelectorError {
        SelectorError::LabelSyntax {
            selector: self.text.to_owned(),
            reason: format!("found '{found}', expected: {expected}"),
        }
    }

    fn selector(mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            match self.peek_word() {
                Token::Identifier(_) | Token::Bang => {}
                Token::End => return Ok(requirements),
                other => return Err(self.unexpected(&other, "!, identifier, or 'end of string'")),
            }
            requirements.push(self.requirement()?);
            match self.next_word() {
                Token::End => return Ok(requirements),
                Token::Comma => match self.peek_word() {
                    Token::Identifier(_) | Token::Bang => {}
                    other => return Err(self.unexpected(&other, "identifier after ','")),
                },
                other => return Err(self.unexpected(&other, "',' or 'end of string'")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = self.peek_word() == Token::Bang;
        if negated {
            self.next();
        }
        let key = match self.next_word() {
            Token::Identifier(key) => key,
            other => return Err(self.unexpected(&other, "identifier")),
        };
        if negated {
            return Requirement::new(key, Operator::DoesNotExist, Vec::new());
        }
        if matches!(self.peek_word(), Token::End | Token::Comma) {
            return Requirement::new(key, Operator::Exists, Vec::new());
        }
        let operator = self.operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(key, operator, values)
    }

    fn operator(&mut self) -> Result<Operator, SelectorError> {
        Ok(match self.next() {
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            other => return Err(self.unexpected(&other, "'=', '==', '!=', 'in', 'notin', '>' or '<'")),
        })
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing before `,` or the end means "".
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        if matches!(self.peek_word(), Token::End | Token::Comma) {
            return Ok(String::new());
        }
        match self.next_word() {
            Token::Identifier(value) => Ok(value),
            other => Err(self.unexpected(&other, "identifier")),
        }
    }

    /// `( value, value, ... )`; empty items (`(a,,b)`, `(,a)`, `(a,)`) stand for "".
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Token::OpenParen => {}
            other => return Err(self.unexpected(&other, "'('")),
        }
        let mut values = Vec::new();
        match self.peek_word() {
            Token::CloseParen => {
                self.next();
                return Ok(values);
            }
            Token::Identifier(_) | Token::Comma => self.value_list(&mut values)?,
            other => return Err(self.unexpected(&other, "',', ')' or identifier")),
        }
        match self.next() {
            Token::CloseParen => Ok(values),
            other => Err(self.unexpected(&other, "')'")),
        }
    }

    fn value_list(&mut self, values: &mut Vec<String>) -> Result<(), SelectorError> {
        let insert = |values: &mut Vec<String>, value: String| {
            if !values.contains(&value) {
                values.push(value);
            }
        };
        loop {
            match self.next_word() {
                Token::Identifier(value) => {
                    insert(values, value);
                    match self.peek_word() {
                        Token::Comma => {}
                        Token::CloseParen => return Ok(()),
                        other => return Err(self.unexpected(&other, "',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        insert(values, String::new());
                    }
                    match self.peek_word() {
                        Token::CloseParen => {
                            insert(values, String::new());
                            return Ok(());
                        }
                        Token::Comma => {
                            self.next();
                            insert(values, String::new());
                        }
                        _ => {}
                    }
                }
                other => return Err(self.unexpected(&other, "',' or identifier")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn parsed_selectors_match_labels_as_upstream() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
        let cases: &[Case] = &[
            ("", &[], true),
            ("a=b", &[("a", "b")], true),
            ("a=b", &[("a", "c")], false),
            ("a=b", &[], false),
            ("a==b", &[("a", "b")], true),
            ("a!=b", &[("a", "c")], true),
            ("a!=b", &[], true),
            ("a!=b", &[("a", "b")], false),
            ("a in (x,y)", &[("a", "y")], true),
            ("a in (x,y)", &[("a", "z")], false),
            ("a in (x,y)", &[], false),
            ("a notin (x)", &[], true),
            ("a notin (x)", &[("a", "y")], true),
            ("a notin (x)", &[("a", "x")], false),
            ("a", &[("a", "")], true),
            ("a", &[("b", "")], false),
            ("!a", &[("b", "x")], true),
            ("!a", &[("a", "x")], false),
            ("a=", &[("a", "")], true),
            ("a=", &[("a", "x")], false),
            ("a=,b=c", &[("a", ""), ("b", "c")], true),
            ("a in (,x)", &[("a", "")], true),
            ("a in (x,)", &[("a", "")], true),
            ("  a = b ,c in ( d , e )  ", &[("a", "b"), ("c", "e")], true),
            ("a=b,c=d", &[("a", "b"), ("c", "x")], false),
            ("example.com/app=web", &[("example.com/app", "web")], true),
            ("in in (in)", &[("in", "in")], true),
            ("n>5", &[("n", "10")], true),
            ("n<5", &[("n", "10")], false),
            ("n>5", &[("n", "ten")], false),
            ("n>5", &[], false),
        ];
        for (text, pairs, expected) in cases {
            let selector = LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text:?} parses: {e}"));
            assert_eq!(selector.matches(&labels(pairs)), *expected, "{text:?} against {pairs:?}");
        }
    }

    #[test]
    fn malformed_selectors_are_rejected_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("a in x", "found 'x', expected: '('"),
            ("a in (x", "found 'end of string', expected: ',' or ')'"),
            ("a in ()", "values set can't be empty"),
            ("a b", "found 'b', expected: '=', '==', '!='"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a,", "found 'end of string', expected: identifier after ','"),
            (",a", "found ',', expected: !, identifier"),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            ("a=b=c", "found '=', expected: ',' or 'end of string'"),
            ("a=(b)", "found '(', expected: identifier"),
            ("a>x", "need exactly one integer value"),
            ("-a=b", "invalid label key \"-a\""),
            ("a/b/c=d", "invalid label key \"a/b/c\""),
            ("Example.com/a=b", "prefix part must be a lowercase DNS subdomain"),
            ("/a=b", "prefix part must be non-empty"),
            ("a/=b", "name part must be non-empty"),
            ("a=-b", "invalid label value \"-b\""),
        ];
        for (text, reason) in cases {
            let error = LabelSelector::parse(text).expect_err(text).to_string();
            assert!(error.contains(reason), "{text:?}: {error:?} should mention {reason:?}");
        }
        let long = "k".repeat(64);
        assert!(matches!(LabelSelector::parse(&long), Err(SelectorError::InvalidKey { .. })));
        assert!(matches!(LabelSelector::parse(&format!("a={long}")), Err(SelectorError::InvalidValue { .. })));
    }

    #[test]
    fn selectors_render_sorted_as_upstream() {
        let cases = [
            ("b=c,a in (z,y),!d", "a in (y,z),b=c,!d"),
            ("x notin (b,a),y==1,z!=2", "x notin (a,b),y==1,z!=2"),
            ("n>5,m", "m,n>5"),
            ("", ""),
        ];
        for (text, rendered) in cases {
            assert_eq!(LabelSelector::parse(text).expect(text).to_string(), rendered);
        }
    }

    #[test]
    fn metav1_selectors_convert_from_json() {
        let app_web = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            (json!({}), true, ""),
            (json!({"matchLabels": {"app": "web"}}), true, "app=web"),
            (json!({"matchLabels": {"app": "db"}}), false, "app=db"),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]}),
                true,
                "tier in (back,front)",
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}),
                false,
                "tier notin (front)",
            ),
            (json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]}), true, "app"),
            (json!({"matchExpressions": [{"key": "gone", "operator": "DoesNotExist", "values": []}]}), true, "!gone"),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                true,
                "app=web,tier",
            ),
        ];
        for (object, expected, rendered) in cases {
            let selector = LabelSelector::from_json(&object).expect("valid selector");
            assert_eq!(selector.matches(&app_web), expected, "{object}");
            assert_eq!(selector.to_string(), rendered);
        }
    }

    #[test]
    fn null_selector_matches_nothing_but_empty_matches_everything() {
        let nothing = LabelSelector::from_json(&Value::Null).expect("null is allowed");
        assert!(!nothing.is_empty());
        assert!(!nothing.matches(&BTreeMap::new()));
        let everything = LabelSelector::from_json(&json!({"matchLabels": null})).expect("empty is allowed");
        assert!(everything.is_empty());
        assert!(everything.matches(&labels(&[("any", "thing")])));
    }

    #[test]
    fn malformed_metav1_selectors_are_rejected() {
        let cases = [
            (json!("app=web"), "expected an object"),
            (json!({"matchLabels": {"app": 1}}), "map of strings"),
            (json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}), "\"Gt\" is not a valid"),
            (json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}), "can't be empty"),
            (json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}), "must be empty"),
            (json!({"matchExpressions": [{"operator": "Exists"}]}), "key must be a string"),
            (json!({"matchLabels": {"a b": "c"}}), "invalid label key"),
        ];
        for (object, reason) in cases {
            let error = LabelSelector::from_json(&object).expect_err("invalid").to_string();
            assert!(error.contains(reason), "{object}: {error:?} should mention {reason:?}");
        }
    }

    #[test]
    fn objects_are_matched_on_metadata_labels() {
        let selector = LabelSelector::parse("app=web,!canary").expect("valid");
        assert!(selector.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!selector.matches_object(&json!({"metadata": {"labels": {"app": "web", "canary": "yes"}}})));
        assert!(!selector.matches_object(&json!({"metadata": {}})));
        assert!(LabelSelector::parse("!app").expect("valid").matches_object(&json!({"metadata": {}})));
    }
}
