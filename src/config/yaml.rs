//! YAML text to the JSON value the schema checks, in one pass over serde_yaml's parser.
//!
//! Going straight to JSON, rather than through serde_yaml's own `Value`, keeps what a JSON value
//! cannot show and an operator needs to hear about, with the JSON pointer of where it stands:
//! numbers that are not 64-bit integers (serde_yaml's `Value` refuses an integer past 64 bits
//! with "as u128, expected any YAML value", and JSON Schema counts `8000.0` as an integer, which
//! then fails to become a `u16` with no path), and merge keys (`<<`), which serde_yaml does not
//! apply. Duplicate keys, which a JSON object would silently collapse, are refused with
//! serde_yaml's own message, and its limits on alias expansion and depth still hold.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// What the JSON value cannot show by itself, each by JSON pointer.
#[derive(Debug, Default)]
pub struct Notes {
    /// Numbers that are not 64-bit integers, as written: `99999999999999999999999`, `8000.5`.
    /// The value holds the nearest float (or null for `.nan` and `.inf`).
    pub numbers: Vec<(String, String)>,
    /// Merge keys (`<<`); the value holds them as ordinary keys.
    pub merge_keys: Vec<String>,
}

/// Parses one YAML document into JSON.
pub fn to_json(text: &str) -> Result<(Value, Notes), serde_yaml::Error> {
    let mut notes = Notes::default();
    let mut pointer = String::new();
    let value = Node {
        pointer: &mut pointer,
        notes: &mut notes,
    }
    .deserialize(serde_yaml::Deserializer::from_str(text))?;
    Ok((value, notes))
}

/// A node at `pointer`.
struct Node<'a> {
    pointer: &'a mut String,
    notes: &'a mut Notes,
}

impl Node<'_> {
    fn child(&mut self) -> Node<'_> {
        Node {
            pointer: self.pointer,
            notes: self.notes,
        }
    }

    fn odd_number(self, written: String, nearest: f64) -> Value {
        self.notes.numbers.push((self.pointer.clone(), written));
        Number::from_f64(nearest).map_or(Value::Null, Value::Number)
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_i128<E>(self, value: i128) -> Result<Value, E> {
        Ok(match i64::try_from(value) {
            Ok(value) => Value::Number(value.into()),
            Err(_) => self.odd_number(value.to_string(), value as f64),
        })
    }

    fn visit_u128<E>(self, value: u128) -> Result<Value, E> {
        Ok(match u64::try_from(value) {
            Ok(value) => Value::Number(value.into()),
            Err(_) => self.odd_number(value.to_string(), value as f64),
        })
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // serde_json writes `8000.0` where Rust writes `8000`, and says what was written.
        let written = Number::from_f64(value).map_or_else(|| value.to_string(), |n| n.to_string());
        Ok(self.odd_number(written, value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        let length = self.pointer.len();
        let mut items = Vec::new();
        loop {
            self.pointer.push('/');
            self.pointer.push_str(&items.len().to_string());
            let item = seq.next_element_seed(self.child());
            self.pointer.truncate(length);
            match item? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        let length = self.pointer.len();
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "duplicate entry with key {key:?}"
                )));
            }
            self.pointer.push('/');
            self.pointer
                .push_str(&key.replace('~', "~0").replace('/', "~1"));
            if key == "<<" {
                self.notes.merge_keys.push(self.pointer.clone());
            }
            let value = map.next_value_seed(self.child());
            self.pointer.truncate(length);
            object.insert(key, value?);
        }
        Ok(Value::Object(object))
    }

    /// A tagged node (`!foo 80`), as serde_yaml's `Value` shows one in JSON: `{"!foo": 80}`.
    fn visit_enum<A: EnumAccess<'de>>(mut self, data: A) -> Result<Value, A::Error> {
        use serde::de::VariantAccess;
        let (tag, contents): (String, _) = data.variant()?;
        let value = contents.newtype_variant_seed(self.child())?;
        let tag = if tag.starts_with('!') {
            tag
        } else {
            format!("!{tag}")
        };
        Ok(Value::Object(Map::from_iter([(tag, value)])))
    }
}

/// A mapping key. JSON keys are strings: numbers and booleans become their text, as
/// `serde_json::to_value` makes them; anything else is refused.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = String;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a string key")
    }

    fn visit_bool<E>(self, value: bool) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_i64<E>(self, value: i64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_u64<E>(self, value: u64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_i128<E>(self, value: i128) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_u128<E>(self, value: u128) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_f64<E>(self, value: f64) -> Result<String, E> {
        Ok(Number::from_f64(value).map_or_else(|| value.to_string(), |n| n.to_string()))
    }

    fn visit_str<E>(self, value: &str) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_string<E>(self, value: String) -> Result<String, E> {
        Ok(value)
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(E::custom("a key must be a string, not null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(de::Error::custom("a key must be a string, not a sequence"))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(de::Error::custom("a key must be a string, not a mapping"))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(de::Error::custom(
            "a key must be a string, not a tagged value",
        ))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}
