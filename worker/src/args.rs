//! Event arguments: JSON values plus the binary attachments their placeholders name.
//!
//! Socket.IO carries binary data out of band: a `Bytes` argument becomes the placeholder
//! `{"_placeholder":true,"num":N}` in the JSON and attachment `N` travels in its own frame.
//! [`Args`] keeps the two together and refuses (in [`Args::check`]) a placeholder that names an
//! attachment that is not there, which the gateways would refuse too.

use bytes::Bytes;
use serde_json::Value;
use switchboard_codec::socketio;

use crate::WorkerError;

/// The arguments of an event or an ack: JSON values, and the attachments their placeholders
/// refer to by index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Args {
    /// The arguments, in order; binary ones are placeholders.
    pub values: Vec<Value>,
    /// Binary attachments, in placeholder order.
    pub attachments: Vec<Bytes>,
}

impl Args {
    /// No arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one JSON argument.
    #[must_use]
    pub fn arg(mut self, value: impl Into<Value>) -> Self {
        self.values.push(value.into());
        self
    }

    /// Appends one binary argument (its placeholder, and the attachment).
    #[must_use]
    pub fn binary(mut self, data: impl Into<Bytes>) -> Self {
        let placeholder = self.attach(data);
        self.values.push(placeholder);
        self
    }

    /// Adds an attachment and returns its placeholder, to put anywhere inside an argument
    /// (`json!({"file": args.attach(bytes)})`).
    pub fn attach(&mut self, data: impl Into<Bytes>) -> Value {
        self.attachments.push(data.into());
        socketio::placeholder(self.attachments.len() - 1)
    }

    /// The first argument, or `Null` when there is none.
    pub fn first(&self) -> &Value {
        self.values.first().unwrap_or(&Value::Null)
    }

    /// Every placeholder names an attachment that exists.
    pub fn check(&self) -> Result<(), WorkerError> {
        let count = self.attachments.len();
        self.values
            .iter()
            .try_for_each(|v| socketio::check_placeholders(Some(v), count))
            .map_err(|e| WorkerError::Invalid(format!("arguments: {e}")))
    }

    /// The arguments as the bus carries them: a compact JSON array (strings escaped as
    /// JavaScript writes them).
    pub fn json(&self) -> String {
        socketio::json_text(&Value::Array(self.values.clone()))
    }

    /// Arguments received from the bus: `args_json` must be a JSON array (empty text: none)
    /// whose placeholders name the given attachments.
    pub(crate) fn from_bus(args_json: &str, attachments: Vec<Bytes>) -> Option<Self> {
        let values = match args_json {
            "" => Vec::new(),
            text => match socketio::parse_json(text)? {
                Value::Array(values) => values,
                _ => return None,
            },
        };
        let args = Self {
            values,
            attachments,
        };
        args.check().ok()?;
        Some(args)
    }
}

/// A JSON array is the list of arguments; any other value is one argument.
impl From<Value> for Args {
    fn from(value: Value) -> Self {
        let values = match value {
            Value::Array(values) => values,
            other => vec![other],
        };
        Self {
            values,
            attachments: Vec::new(),
        }
    }
}

impl From<Vec<Value>> for Args {
    fn from(values: Vec<Value>) -> Self {
        Self {
            values,
            attachments: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn binary_arguments_become_placeholders() {
        let mut args = Args::new().arg("a").binary(&b"\x01\x02"[..]);
        let nested = args.attach(&b"x"[..]);
        let args = args.arg(json!({ "f": nested }));
        assert_eq!(
            args.json(),
            r#"["a",{"_placeholder":true,"num":0},{"f":{"_placeholder":true,"num":1}}]"#
        );
        assert_eq!(args.attachments.len(), 2);
        assert!(args.check().is_ok());
    }

    #[test]
    fn bus_arguments_are_checked() {
        let cases: &[(&str, usize, bool)] = &[
            ("", 0, true),
            ("[]", 0, true),
            (r#"[1,"a",{"b":null}]"#, 0, true),
            (r#"[{"_placeholder":true,"num":0}]"#, 1, true),
            (r#"[{"_placeholder":true,"num":1}]"#, 1, false),
            (r#"[{"_placeholder":true,"num":0}]"#, 0, false),
            ("{}", 0, false),
            ("1", 0, false),
            ("[", 0, false),
            ("\u{0}", 0, false),
        ];
        for (text, count, ok) in cases {
            let attachments = vec![Bytes::from_static(b"x"); *count];
            assert_eq!(
                Args::from_bus(text, attachments).is_some(),
                *ok,
                "{text:?} with {count} attachments"
            );
        }
    }

    #[test]
    fn a_value_is_one_argument_and_an_array_many() {
        assert_eq!(Args::from(json!([1, 2])).values, vec![json!(1), json!(2)]);
        assert_eq!(Args::from(json!({"a": 1})).values, vec![json!({"a": 1})]);
        assert_eq!(Args::new().first(), &Value::Null);
    }
}
