//! Writing any `Serialize` value as a pickle (protocol 3) for CPython peers.
//!
//! The shapes are the ones Python code expects (and the serde-pickle crate writes): sequences become
//! lists, tuples tuples, maps and structs dicts, `None` and `()` None, a unit variant its name,
//! any other variant a one-entry dict `{name: value}`. Integers of any width up to 128 bits
//! become Python ints. Only data opcodes are written, so the peer's `pickle.loads` builds plain
//! values.

use std::fmt;

use serde::ser::{self, Serialize};

/// Why a value could not be pickled, or a pickle was refused or did not fit the type asked
/// for (shared with the unpickler).
#[derive(Debug)]
pub(crate) struct PickleError(String);

impl PickleError {
    pub(crate) fn new(what: impl fmt::Display) -> PickleError {
        PickleError(what.to_string())
    }
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PickleError {}

impl ser::Error for PickleError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PickleError::new(msg)
    }
}

impl serde::de::Error for PickleError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PickleError::new(msg)
    }
}

/// `value` as a protocol-3 pickle.
pub(crate) fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, PickleError> {
    let mut pickler = Pickler { out: vec![0x80, 3] };
    value.serialize(&mut pickler)?;
    pickler.out.push(b'.');
    Ok(pickler.out)
}

struct Pickler {
    out: Vec<u8>,
}

impl Pickler {
    fn int(&mut self, v: i128) {
        if let Ok(small) = i32::try_from(v) {
            self.out.push(b'J');
            self.out.extend_from_slice(&small.to_le_bytes());
            return;
        }
        // LONG1: the shortest little-endian two's complement that keeps the sign.
        let bytes = v.to_le_bytes();
        let mut len = 16;
        while len > 1 {
            let (last, before) = (bytes[len - 1], bytes[len - 2]);
            if (last == 0 && before & 0x80 == 0) || (last == 0xff && before & 0x80 != 0) {
                len -= 1;
            } else {
                break;
            }
        }
        self.out.extend_from_slice(&[0x8a, len as u8]);
        self.out.extend_from_slice(&bytes[..len]);
    }

    fn uint(&mut self, v: u128) {
        match i128::try_from(v) {
            Ok(v) => self.int(v),
            Err(_) => {
                // 2^127 and up: 16 bytes and a zero sign byte.
                self.out.extend_from_slice(&[0x8a, 17]);
                self.out.extend_from_slice(&v.to_le_bytes());
                self.out.push(0);
            }
        }
    }

    fn text(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn check_len(len: usize) -> Result<(), PickleError> {
        if len > u32::MAX as usize {
            return Err(PickleError("a string or bytes over 4 GiB".into()));
        }
        Ok(())
    }
}

/// A container being written; `close` is the opcode that finishes it.
struct Open<'a> {
    pickler: &'a mut Pickler,
    close: &'static [u8],
}

impl Open<'_> {
    fn end(self) -> Result<(), PickleError> {
        self.pickler.out.extend_from_slice(self.close);
        Ok(())
    }
}

macro_rules! element {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Open<'_> {
            type Ok = ();
            type Error = PickleError;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), PickleError> {
                value.serialize(&mut *self.pickler)
            }

            fn end(self) -> Result<(), PickleError> {
                Open::end(self)
            }
        }
    )*};
}

element!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Open<'_> {
    type Ok = ();
    type Error = PickleError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), PickleError> {
        key.serialize(&mut *self.pickler)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), PickleError> {
        value.serialize(&mut *self.pickler)
    }

    fn end(self) -> Result<(), PickleError> {
        Open::end(self)
    }
}

macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Open<'_> {
            type Ok = ();
            type Error = PickleError;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), PickleError> {
                self.pickler.text(key);
                value.serialize(&mut *self.pickler)
            }

            fn end(self) -> Result<(), PickleError> {
                Open::end(self)
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

impl<'a> ser::Serializer for &'a mut Pickler {
    type Ok = ();
    type Error = PickleError;
    type SerializeSeq = Open<'a>;
    type SerializeTuple = Open<'a>;
    type SerializeTupleStruct = Open<'a>;
    type SerializeTupleVariant = Open<'a>;
    type SerializeMap = Open<'a>;
    type SerializeStruct = Open<'a>;
    type SerializeStructVariant = Open<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), PickleError> {
        self.out.push(if v { 0x88 } else { 0x89 });
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<(), PickleError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), PickleError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), PickleError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i64(self, v: i64) -> Result<(), PickleError> {
        self.serialize_i128(i128::from(v))
    }

    fn serialize_i128(self, v: i128) -> Result<(), PickleError> {
        self.int(v);
        Ok(())
    }

    fn serialize_u8(self, v: u8) -> Result<(), PickleError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), PickleError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), PickleError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u64(self, v: u64) -> Result<(), PickleError> {
        self.serialize_u128(u128::from(v))
    }

    fn serialize_u128(self, v: u128) -> Result<(), PickleError> {
        self.uint(v);
        Ok(())
    }

    fn serialize_f32(self, v: f32) -> Result<(), PickleError> {
        self.serialize_f64(f64::from(v))
    }

    fn serialize_f64(self, v: f64) -> Result<(), PickleError> {
        self.out.push(b'G');
        self.out.extend_from_slice(&v.to_bits().to_be_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), PickleError> {
        self.text(v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), PickleError> {
        Pickler::check_len(v.len())?;
        self.text(v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), PickleError> {
        Pickler::check_len(v.len())?;
        self.out.push(b'B');
        self.out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.out.extend_from_slice(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), PickleError> {
        self.out.push(b'N');
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), PickleError> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), PickleError> {
        self.serialize_none()
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), PickleError> {
        self.serialize_none()
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), PickleError> {
        self.text(variant);
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), PickleError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), PickleError> {
        self.out.push(b'}');
        self.text(variant);
        value.serialize(&mut *self)?;
        self.out.push(b's');
        Ok(())
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Open<'a>, PickleError> {
        self.out.extend_from_slice(b"](");
        Ok(Open {
            pickler: self,
            close: b"e",
        })
    }

    fn serialize_tuple(self, _: usize) -> Result<Open<'a>, PickleError> {
        self.out.push(b'(');
        Ok(Open {
            pickler: self,
            close: b"t",
        })
    }

    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Open<'a>, PickleError> {
        self.serialize_tuple(len)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Open<'a>, PickleError> {
        self.out.push(b'}');
        self.text(variant);
        self.out.extend_from_slice(b"](");
        Ok(Open {
            pickler: self,
            close: b"es",
        })
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Open<'a>, PickleError> {
        self.out.extend_from_slice(b"}(");
        Ok(Open {
            pickler: self,
            close: b"u",
        })
    }

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Open<'a>, PickleError> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Open<'a>, PickleError> {
        self.out.push(b'}');
        self.text(variant);
        self.out.extend_from_slice(b"}(");
        Ok(Open {
            pickler: self,
            close: b"us",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::to_vec;
    use crate::connection::unpickle::from_slice;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Shape {
        Dot,
        Circle(f64),
        Rect { w: u32, h: u32 },
        Pair(i8, i8),
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Everything {
        ints: (i8, u64, i128, u128, i64),
        text: String,
        bytes: serde_bytes_vec::Bytes,
        list: Vec<Option<bool>>,
        map: BTreeMap<String, Vec<Shape>>,
        unit: (),
    }

    use crate::connection::wire::serde_bytes_vec;

    #[test]
    fn round_trips_through_our_unpickler() {
        let value = Everything {
            ints: (-5, u64::MAX, i128::MIN, u128::MAX, -(1 << 40)),
            text: "héllo".into(),
            bytes: serde_bytes_vec::Bytes(vec![0, 255, 7]),
            list: vec![Some(true), None, Some(false)],
            map: BTreeMap::from([(
                "shapes".to_string(),
                vec![
                    Shape::Dot,
                    Shape::Circle(1.5),
                    Shape::Rect { w: 2, h: 3 },
                    Shape::Pair(-1, 1),
                ],
            )]),
            unit: (),
        };
        let pickle = to_vec(&value).unwrap();
        assert_eq!(from_slice::<Everything>(&pickle).unwrap(), value);
    }

    /// CPython reads what we write (checked by `tests/python_peer.rs` against a real peer; here
    /// the exact bytes of a few values, as `pickle.dumps` accepts them).
    #[test]
    fn ints_use_the_shortest_long() {
        assert_eq!(to_vec(&1u8).unwrap(), b"\x80\x03J\x01\x00\x00\x00.");
        assert_eq!(
            to_vec(&(1u64 << 63)).unwrap(),
            b"\x80\x03\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00."
        );
        assert_eq!(
            to_vec(&-(1i64 << 40)).unwrap(),
            b"\x80\x03\x8a\x06\x00\x00\x00\x00\x00\xff."
        );
    }
}
