//! Python values to JSON values, strictly: what crosses the bridge must be something
//! JSON can hold, whichever mode then carries it.
//!
//! pythonize walks the Python object; the visitor here builds the
//! [`serde_json::Value`] and refuses what JSON cannot hold instead of bending it:
//! NaN and infinities (serde_json would silently turn them into `null`), ints beyond 64
//! bits, bytes, non-`str` dict keys, objects pythonize does not know, and nesting deeper
//! than [`MAX_DEPTH`] (checked while walking, so a self-referencing dict is refused
//! rather than overflowing the stack). Tuples and sets become lists. Every refusal is a
//! `contract` error whose message names where the value was, e.g.
//! `payload["metrics"]["loss"]: nan cannot cross the bridge: …`.

use crate::core::error::{BridgeError, ErrorClass};
use crate::core::payload::MAX_DEPTH;
use pyo3::prelude::*;
use pythonize::Depythonizer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::fmt;

/// Converts `obj` to a JSON value. `what` names it in error messages (`payload`,
/// `contract`, …).
pub fn from_python(obj: &Bound<'_, PyAny>, what: &str) -> Result<Value, BridgeError> {
    let path = RefCell::new(Vec::new());
    let seed = Strict {
        path: &path,
        depth: 0,
    };
    seed.deserialize(&mut Depythonizer::from_object(obj))
        .map_err(|err| {
            // On failure the path still holds the segments down to the offending value.
            let at: String = path.borrow().concat();
            BridgeError::new(ErrorClass::Contract, format!("{what}{at}: {err}"))
                .with_detail("path", format!("{what}{at}"))
        })
}

/// Builds one JSON value; `path` holds the `["key"]` / `[index]` segments leading to it.
#[derive(Clone, Copy)]
struct Strict<'a> {
    path: &'a RefCell<Vec<String>>,
    depth: usize,
}

impl Strict<'_> {
    /// The seed for a child of a container, refusing to go deeper than [`MAX_DEPTH`].
    fn child<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom(format!("nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(Strict {
            path: self.path,
            depth: self.depth + 1,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("None, a bool, an int, a finite float, a str, a list or a dict with str keys")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::from)
            .map_err(|_| E::custom(format!("the int {v} does not fit in 64 bits")))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| E::custom(format!("the int {v} does not fit in 64 bits")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| {
            E::custom(format!(
                "{v} cannot cross the bridge: JSON has no NaN or Infinity; send None or a string"
            ))
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Value, E> {
        Err(E::custom(
            "bytes cannot cross the bridge: decode or base64-encode them",
        ))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            self.path.borrow_mut().push(format!("[{}]", items.len()));
            let Some(item) = seq.next_element_seed(child)? else {
                self.path.borrow_mut().pop();
                return Ok(Value::Array(items));
            };
            self.path.borrow_mut().pop();
            items.push(item);
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            self.path.borrow_mut().push(format!("[{key:?}]"));
            let value = map.next_value_seed(child)?;
            self.path.borrow_mut().pop();
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// A dict key: only `str` keys cross (JSON object keys are strings).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a str dict key (JSON object keys are strings)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}
