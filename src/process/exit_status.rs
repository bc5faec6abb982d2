//! Whether a child entry's value is an `Err`, so the child exits with status 1 (as a Rust `main`
//! returning `Err` does) and `exitcode()` tells failure from success.
//!
//! Entries return any `Serialize` type, and stable Rust cannot ask a generic value whether it
//! is a `Result`. Serde can: `Result` serialises itself as the enum `Result` with the variant
//! `Err` or `Ok`. This serializer stops at the first call it receives and records whether that
//! call was `Result::Err`.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// Whether `value` is a `Result::Err` (at its top level).
pub(crate) fn is_err_result<T: Serialize + ?Sized>(value: &T) -> bool {
    matches!(value.serialize(Probe), Err(Seen::ErrResult))
}

struct Probe;

/// Why the probe stopped (it always stops at the first call).
#[derive(Debug)]
enum Seen {
    ErrResult,
    Other,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for Seen {}

impl ser::Error for Seen {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Seen::Other
    }
}

macro_rules! not_a_result {
    ($($method:ident($($arg:ty),*);)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<(), Seen> {
            Err(Seen::Other)
        }
    )*};
}

impl ser::Serializer for Probe {
    type Ok = ();
    type Error = Seen;
    type SerializeSeq = Impossible<(), Seen>;
    type SerializeTuple = Impossible<(), Seen>;
    type SerializeTupleStruct = Impossible<(), Seen>;
    type SerializeTupleVariant = Impossible<(), Seen>;
    type SerializeMap = Impossible<(), Seen>;
    type SerializeStruct = Impossible<(), Seen>;
    type SerializeStructVariant = Impossible<(), Seen>;

    not_a_result! {
        serialize_bool(bool); serialize_i8(i8); serialize_i16(i16); serialize_i32(i32);
        serialize_i64(i64); serialize_u8(u8); serialize_u16(u16); serialize_u32(u32);
        serialize_u64(u64); serialize_f32(f32); serialize_f64(f64); serialize_char(char);
        serialize_str(&str); serialize_bytes(&[u8]); serialize_none(); serialize_unit();
        serialize_unit_struct(&'static str);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Seen> {
        Err(Seen::Other)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Seen> {
        Err(Seen::Other)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<(), Seen> {
        Err(if name == "Result" && variant == "Err" {
            Seen::ErrResult
        } else {
            Seen::Other
        })
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Seen> {
        Err(Seen::Other)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Seen> {
        Err(Seen::Other)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Seen> {
        Err(Seen::Other)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Seen> {
        Err(Seen::Other)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Seen> {
        Err(Seen::Other)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Seen> {
        Err(Seen::Other)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Seen> {
        Err(Seen::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::is_err_result;

    #[test]
    fn only_a_top_level_err_counts() {
        assert!(is_err_result(&Err::<u8, String>("no".into())));
        assert!(!is_err_result(&Ok::<u8, String>(1)));
        assert!(!is_err_result(&1u64));
        assert!(!is_err_result(&Some(Err::<u8, u8>(1))));
        assert!(!is_err_result(&vec![Err::<u8, u8>(1)]));
        assert!(!is_err_result(&()));
    }
}
