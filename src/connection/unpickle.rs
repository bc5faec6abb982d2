//! Reading pickles from CPython peers into any `Deserialize` type, safely.
//!
//! A pickle is a program for a small stack machine. This one runs only the opcodes that build
//! plain data (None, bools, ints, floats, str, bytes, lists, tuples, dicts, sets, the memo) and
//! refuses everything that names a class or calls one, so nothing is ever executed. Values go
//! into a flat arena, where a memo reference is just the same node again — Python sends shared
//! references all the time (`[row] * 3`) and they are fine — and mutation through the memo
//! works as in Python. Before anything is deserialised the arena is walked without recursion
//! and refused if it holds a true cycle, nests deeper than [`MAX_DEPTH`], or would expand
//! (shared references copied out) past [`MAX_EXPANDED`] values or [`MAX_EXPANDED_BYTES`] bytes:
//! a hostile peer gets an `Err` at any depth, never a stack overflow or an allocation it chose.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

pub(crate) use super::pickle::PickleError;

/// Deepest nesting accepted (CPython's own recursion limit is 1000; plain data rarely nests
/// past a few dozen levels).
pub(crate) const MAX_DEPTH: usize = 256;
/// Most values a pickle may expand to once shared references are copied out.
pub(crate) const MAX_EXPANDED: u64 = 1 << 24;
/// Most bytes of text and bytes a pickle may expand to.
pub(crate) const MAX_EXPANDED_BYTES: u64 = 1 << 30;

fn refuse<T>(what: impl fmt::Display) -> Result<T, PickleError> {
    Err(PickleError::new(what))
}

/// Deserialises a pickle (protocols 0 to 5) into `T`.
pub(crate) fn from_slice<T: DeserializeOwned>(pickle: &[u8]) -> Result<T, PickleError> {
    let (arena, root) = Machine::run(pickle)?;
    check_shape(&arena, root)?;
    T::deserialize(At {
        arena: &arena,
        index: root,
    })
}

#[derive(Debug)]
enum Node {
    None,
    Bool(bool),
    Int(i128),
    /// An int from 2^127 to 2^128 − 1.
    Big(u128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
}

impl Node {
    fn children(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        match self {
            Node::List(c) | Node::Tuple(c) | Node::Set(c) => Box::new(c.iter().copied()),
            Node::Dict(c) => Box::new(c.iter().flat_map(|&(k, v)| [k, v])),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Node::Str(s) => s.len() as u64,
            Node::Bytes(b) => b.len() as u64,
            _ => 0,
        }
    }
}

/// The pickle machine: a stack of node indices, the marks, the memo.
struct Machine<'p> {
    input: &'p [u8],
    pos: usize,
    arena: Vec<Node>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: HashMap<u64, usize>,
}

impl<'p> Machine<'p> {
    fn run(input: &'p [u8]) -> Result<(Vec<Node>, usize), PickleError> {
        let mut m = Machine {
            input,
            pos: 0,
            arena: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        };
        loop {
            let op = m.byte()?;
            if op == b'.' {
                let root = m.pop()?;
                return Ok((m.arena, root));
            }
            m.step(op)?;
        }
    }

    fn take(&mut self, n: usize) -> Result<&'p [u8], PickleError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.input.len() => {
                let bytes = &self.input[self.pos..end];
                self.pos = end;
                Ok(bytes)
            }
            _ => refuse("pickle ends in the middle of an opcode"),
        }
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn le(&mut self, n: usize) -> Result<u64, PickleError> {
        let bytes = self.take(n)?;
        let mut word = [0u8; 8];
        word[..n].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    fn len(&mut self, n: usize) -> Result<usize, PickleError> {
        let len = self.le(n)?;
        usize::try_from(len)
            .ok()
            .filter(|&len| len <= self.input.len() - self.pos)
            .map_or_else(|| refuse("a length runs past the end of the pickle"), Ok)
    }

    fn line_bytes(&mut self) -> Result<&'p [u8], PickleError> {
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or_else(|| refuse("unterminated line in a pickle"), Ok)?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn line(&mut self) -> Result<&'p str, PickleError> {
        let line = self.line_bytes()?;
        std::str::from_utf8(line).map_or_else(|_| refuse("a pickle line is not text"), Ok)
    }

    fn push(&mut self, node: Node) {
        self.arena.push(node);
        self.stack.push(self.arena.len() - 1);
    }

    fn pop(&mut self) -> Result<usize, PickleError> {
        if self.marks.last() == Some(&self.stack.len()) {
            return refuse("a pickle pops past a mark");
        }
        self.stack
            .pop()
            .map_or_else(|| refuse("a pickle pops an empty stack"), Ok)
    }

    fn top(&self) -> Result<usize, PickleError> {
        self.stack
            .last()
            .copied()
            .map_or_else(|| refuse("a pickle uses an empty stack"), Ok)
    }

    /// Everything pushed since the last mark, and the mark removed.
    fn since_mark(&mut self) -> Result<Vec<usize>, PickleError> {
        let mark = self
            .marks
            .pop()
            .map_or_else(|| refuse("a pickle has no mark to return to"), Ok)?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        let index = *self.memo.get(&key).map_or_else(
            || refuse(format!("a pickle refers to memo entry {key}, never stored")),
            Ok,
        )?;
        self.stack.push(index);
        Ok(())
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let top = self.top()?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn int(&mut self, bytes: &[u8]) -> Result<(), PickleError> {
        let node = match bytes.len() {
            0 => Node::Int(0),
            n @ 1..=16 => {
                let fill = if bytes[n - 1] & 0x80 != 0 { 0xff } else { 0 };
                let mut word = [fill; 16];
                word[..n].copy_from_slice(bytes);
                Node::Int(i128::from_le_bytes(word))
            }
            17 if bytes[16] == 0 => {
                Node::Big(u128::from_le_bytes(bytes[..16].try_into().expect("16")))
            }
            _ => return refuse("an integer larger than 128 bits"),
        };
        self.push(node);
        Ok(())
    }

    fn add_to_list(&mut self, items: Vec<usize>) -> Result<(), PickleError> {
        let list = self.top()?;
        match &mut self.arena[list] {
            Node::List(children) => children.extend(items),
            _ => return refuse("a pickle appends to something that is not a list"),
        }
        Ok(())
    }

    fn add_to_dict(&mut self, items: Vec<usize>) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return refuse("a pickle sets a key without a value");
        }
        let dict = self.top()?;
        match &mut self.arena[dict] {
            Node::Dict(entries) => {
                entries.extend(items.chunks(2).map(|pair| (pair[0], pair[1])));
            }
            _ => return refuse("a pickle sets an item on something that is not a dict"),
        }
        Ok(())
    }

    fn step(&mut self, op: u8) -> Result<(), PickleError> {
        match op {
            // Framing and protocol.
            0x80 => {
                let proto = self.byte()?;
                if proto > 5 {
                    return refuse(format!("pickle protocol {proto}"));
                }
            }
            0x95 => {
                self.le(8)?;
            }
            // Marks and stack.
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.since_mark()?;
            }
            b'2' => {
                let top = self.top()?;
                self.stack.push(top);
            }
            // Constants and numbers.
            b'N' => self.push(Node::None),
            0x88 => self.push(Node::Bool(true)),
            0x89 => self.push(Node::Bool(false)),
            b'J' => {
                let v = self.le(4)? as u32 as i32;
                self.push(Node::Int(i128::from(v)));
            }
            b'K' => {
                let v = self.byte()?;
                self.push(Node::Int(i128::from(v)));
            }
            b'M' => {
                let v = self.le(2)?;
                self.push(Node::Int(i128::from(v)));
            }
            0x8a => {
                let n = self.len(1)?;
                let bytes = self.take(n)?;
                self.int(bytes)?;
            }
            0x8b => {
                let n = self.len(4)?;
                let bytes = self.take(n)?;
                self.int(bytes)?;
            }
            b'I' => {
                let line = self.line()?;
                let node = match line {
                    "01" => Node::Bool(true),
                    "00" => Node::Bool(false),
                    text => Node::Int(
                        text.parse()
                            .map_or_else(|_| refuse("a bad INT in a pickle"), Ok)?,
                    ),
                };
                self.push(node);
            }
            b'L' => {
                let line = self.line()?;
                let text = line.strip_suffix('L').unwrap_or(line);
                let node = match text.parse::<i128>() {
                    Ok(v) => Node::Int(v),
                    Err(_) => Node::Big(
                        text.parse()
                            .map_or_else(|_| refuse("an integer larger than 128 bits"), Ok)?,
                    ),
                };
                self.push(node);
            }
            b'G' => {
                let bits = u64::from_be_bytes(self.take(8)?.try_into().expect("8"));
                self.push(Node::Float(f64::from_bits(bits)));
            }
            b'F' => {
                let line = self.line()?;
                let v = line
                    .parse()
                    .map_or_else(|_| refuse("a bad FLOAT in a pickle"), Ok)?;
                self.push(Node::Float(v));
            }
            // Text and bytes.
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => self.len(1)?,
                    b'X' => self.len(4)?,
                    _ => self.len(8)?,
                };
                let bytes = self.take(n)?;
                let text = std::str::from_utf8(bytes)
                    .map_or_else(|_| refuse("a pickled str is not UTF-8"), Ok)?;
                self.push(Node::Str(text.to_owned()));
            }
            b'V' => {
                let line = self.line_bytes()?;
                let text = raw_unicode_escape(line)?;
                self.push(Node::Str(text));
            }
            b'C' | b'B' | 0x8e | 0x96 => {
                let n = match op {
                    b'C' => self.len(1)?,
                    b'B' => self.len(4)?,
                    _ => self.len(8)?,
                };
                let bytes = self.take(n)?.to_vec();
                self.push(Node::Bytes(bytes));
            }
            // Containers.
            b']' => self.push(Node::List(Vec::new())),
            b'l' => {
                let items = self.since_mark()?;
                self.push(Node::List(items));
            }
            b'a' => {
                let item = self.pop()?;
                self.add_to_list(vec![item])?;
            }
            b'e' => {
                let items = self.since_mark()?;
                self.add_to_list(items)?;
            }
            b')' => self.push(Node::Tuple(Vec::new())),
            b't' => {
                let items = self.since_mark()?;
                self.push(Node::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < n
                    || self.marks.last().is_some_and(|&m| m > self.stack.len() - n)
                {
                    return refuse("a pickle builds a tuple from too few items");
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Node::Tuple(items));
            }
            b'}' => self.push(Node::Dict(Vec::new())),
            b'd' => {
                let items = self.since_mark()?;
                self.push(Node::Dict(Vec::new()));
                self.add_to_dict(items)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.add_to_dict(vec![key, value])?;
            }
            b'u' => {
                let items = self.since_mark()?;
                self.add_to_dict(items)?;
            }
            0x8f => self.push(Node::Set(Vec::new())),
            0x90 => {
                let items = self.since_mark()?;
                let set = self.top()?;
                match &mut self.arena[set] {
                    Node::Set(children) => children.extend(items),
                    _ => return refuse("a pickle adds items to something that is not a set"),
                }
            }
            0x91 => {
                let items = self.since_mark()?;
                self.push(Node::Set(items));
            }
            // The memo.
            b'p' => {
                let key = self
                    .line()?
                    .parse()
                    .map_or_else(|_| refuse("a bad PUT in a pickle"), Ok)?;
                self.memo_put(key)?;
            }
            b'q' => {
                let key = self.le(1)?;
                self.memo_put(key)?;
            }
            b'r' => {
                let key = self.le(4)?;
                self.memo_put(key)?;
            }
            0x94 => {
                let key = self.memo.len() as u64;
                self.memo_put(key)?;
            }
            b'g' => {
                let key = self
                    .line()?
                    .parse()
                    .map_or_else(|_| refuse("a bad GET in a pickle"), Ok)?;
                self.memo_get(key)?;
            }
            b'h' => {
                let key = self.le(1)?;
                self.memo_get(key)?;
            }
            b'j' => {
                let key = self.le(4)?;
                self.memo_get(key)?;
            }
            other => {
                return refuse(format!(
                    "pickle opcode {other:#04x} builds objects by calling code; only plain data is accepted"
                ));
            }
        }
        Ok(())
    }
}

/// Python's `raw-unicode-escape` (protocol 0's text): `\uXXXX` and `\UXXXXXXXX` escapes, every
/// other byte a Latin-1 character.
fn raw_unicode_escape(line: &[u8]) -> Result<String, PickleError> {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.iter().map(|&b| char::from(b));
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let digits = match chars.clone().next() {
            Some('u') => 4,
            Some('U') => 8,
            _ => {
                out.push(c);
                continue;
            }
        };
        chars.next();
        let hex: String = chars.by_ref().take(digits).collect();
        let code = u32::from_str_radix(&hex, 16)
            .ok()
            .and_then(char::from_u32)
            .map_or_else(|| refuse("a bad escape in a protocol-0 str"), Ok)?;
        out.push(code);
    }
    Ok(out)
}

/// Walks the value from `root` without recursion: refuses true cycles, nesting past
/// [`MAX_DEPTH`], and expansion past [`MAX_EXPANDED`] values or [`MAX_EXPANDED_BYTES`] bytes.
fn check_shape(arena: &[Node], root: usize) -> Result<(), PickleError> {
    const NEW: u8 = 0;
    const OPEN: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; arena.len()];
    // Per node: depth, expanded values, expanded bytes (saturating).
    let mut sizes = vec![(0usize, 0u64, 0u64); arena.len()];
    let mut walk: Vec<(usize, Vec<usize>, usize)> = Vec::new();
    let open = |index: usize| (index, arena[index].children().collect::<Vec<_>>(), 0);
    state[root] = OPEN;
    walk.push(open(root));
    while let Some((index, children, next)) = walk.last_mut() {
        if let Some(&child) = children.get(*next) {
            *next += 1;
            match state[child] {
                NEW => {
                    if walk.len() >= MAX_DEPTH {
                        return refuse(format!(
                            "the pickled value nests deeper than {MAX_DEPTH} levels"
                        ));
                    }
                    state[child] = OPEN;
                    let frame = open(child);
                    walk.push(frame);
                }
                OPEN => return refuse("the pickled value contains itself (a true cycle)"),
                _ => {}
            }
            continue;
        }
        let index = *index;
        let (mut depth, mut values, mut bytes) = (0usize, 1u64, arena[index].bytes());
        for child in arena[index].children() {
            let (d, v, b) = sizes[child];
            depth = depth.max(d);
            values = values.saturating_add(v);
            bytes = bytes.saturating_add(b);
        }
        sizes[index] = (depth + 1, values, bytes);
        state[index] = DONE;
        walk.pop();
        if depth + 1 > MAX_DEPTH {
            return refuse(format!(
                "the pickled value nests deeper than {MAX_DEPTH} levels"
            ));
        }
        if values > MAX_EXPANDED || bytes > MAX_EXPANDED_BYTES {
            return refuse("the pickled value's shared references expand too far");
        }
    }
    Ok(())
}

/// A node of the arena, as a serde `Deserializer`.
#[derive(Clone, Copy)]
struct At<'a> {
    arena: &'a [Node],
    index: usize,
}

impl<'a> At<'a> {
    fn node(&self) -> &'a Node {
        &self.arena[self.index]
    }

    fn at(&self, index: usize) -> At<'a> {
        At {
            arena: self.arena,
            index,
        }
    }
}

struct Seq<'a, I> {
    arena: &'a [Node],
    items: I,
}

impl<'de, 'a, I: Iterator<Item = usize>> de::SeqAccess<'de> for Seq<'a, I> {
    type Error = PickleError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, PickleError> {
        match self.items.next() {
            Some(index) => seed
                .deserialize(At {
                    arena: self.arena,
                    index,
                })
                .map(Some),
            None => Ok(None),
        }
    }
}

struct Map<'a, I> {
    arena: &'a [Node],
    entries: I,
    value: Option<usize>,
}

impl<'de, 'a, I: Iterator<Item = (usize, usize)>> de::MapAccess<'de> for Map<'a, I> {
    type Error = PickleError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, PickleError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(At {
                    arena: self.arena,
                    index: key,
                })
                .map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, PickleError> {
        let index = self
            .value
            .take()
            .map_or_else(|| refuse("a map value without its key"), Ok)?;
        seed.deserialize(At {
            arena: self.arena,
            index,
        })
    }
}

/// An enum as our pickler (and serde-pickle) writes one, and Python code may: `"Variant"`, `("Variant",)`,
/// `("Variant", value)` or `{"Variant": value}`.
struct Enum<'a> {
    variant: At<'a>,
    value: Option<At<'a>>,
}

impl<'de, 'a> de::EnumAccess<'de> for Enum<'a> {
    type Error = PickleError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self), PickleError> {
        let variant = seed.deserialize(self.variant)?;
        Ok((variant, self))
    }
}

impl<'de, 'a> de::VariantAccess<'de> for Enum<'a> {
    type Error = PickleError;

    fn unit_variant(self) -> Result<(), PickleError> {
        match self.value.map(|v| v.node()) {
            None | Some(Node::None) => Ok(()),
            Some(_) => refuse("a unit variant with a value"),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, PickleError> {
        match self.value {
            Some(value) => seed.deserialize(value),
            None => refuse("a newtype variant without its value"),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, PickleError> {
        match self.value {
            Some(value) => de::Deserializer::deserialize_seq(value, visitor),
            None => refuse("a tuple variant without its values"),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PickleError> {
        match self.value {
            Some(value) => de::Deserializer::deserialize_map(value, visitor),
            None => refuse("a struct variant without its fields"),
        }
    }
}

impl<'de, 'a> de::Deserializer<'de> for At<'a> {
    type Error = PickleError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PickleError> {
        match self.node() {
            Node::None => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Int(v) => {
                if let Ok(small) = i64::try_from(*v) {
                    visitor.visit_i64(small)
                } else if let Ok(large) = u64::try_from(*v) {
                    visitor.visit_u64(large)
                } else {
                    visitor.visit_i128(*v)
                }
            }
            Node::Big(v) => visitor.visit_u128(*v),
            Node::Float(v) => visitor.visit_f64(*v),
            Node::Str(s) => visitor.visit_str(s),
            Node::Bytes(b) => visitor.visit_bytes(b),
            Node::List(items) | Node::Tuple(items) | Node::Set(items) => visitor.visit_seq(Seq {
                arena: self.arena,
                items: items.iter().copied(),
            }),
            Node::Dict(entries) => visitor.visit_map(Map {
                arena: self.arena,
                entries: entries.iter().copied(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PickleError> {
        match self.node() {
            Node::None => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PickleError> {
        match self.node() {
            Node::None => visitor.visit_unit(),
            Node::Tuple(items) if items.is_empty() => visitor.visit_unit(),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PickleError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PickleError> {
        visitor.visit_newtype_struct(self)
    }

    /// Python `bytes` also fill a sequence of numbers (`Vec<u8>`).
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PickleError> {
        match self.node() {
            Node::Bytes(bytes) => {
                visitor.visit_seq(de::value::SeqDeserializer::new(bytes.iter().copied()))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, PickleError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PickleError> {
        let access = match self.node() {
            Node::Str(_) => Enum {
                variant: self,
                value: None,
            },
            Node::Tuple(items) if items.len() == 1 || items.len() == 2 => Enum {
                variant: self.at(items[0]),
                value: items.get(1).map(|&i| self.at(i)),
            },
            Node::Dict(entries) if entries.len() == 1 => Enum {
                variant: self.at(entries[0].0),
                value: Some(self.at(entries[0].1)),
            },
            _ => return refuse("expected an enum variant (a name, a tuple or a one-entry dict)"),
        };
        visitor.visit_enum(access)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        map struct identifier ignored_any tuple_struct
    }
}

impl<'de> IntoDeserializer<'de, PickleError> for At<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pickles made by CPython 3.11 (`pickle.dumps(value, protocol=p)`).
    #[test]
    fn plain_data_from_cpython() {
        // [1, 2.5, 'é', b'x', None, True, {'k': (1, 2)}], protocol 4
        let p4 = b"\x80\x04\x95(\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00\x8c\x02\xc3\xa9\x94C\x01x\x94N\x88}\x94\x8c\x01k\x94K\x01K\x02\x86\x94se.";
        type Mixed = (
            u8,
            f64,
            String,
            Vec<u8>,
            Option<u8>,
            bool,
            HashMap<String, (u8, u8)>,
        );
        let v: Mixed = from_slice(p4).unwrap();
        assert_eq!(v.0, 1);
        assert_eq!(v.2, "é");
        assert_eq!(v.3, b"x");
        assert_eq!(v.6["k"], (1, 2));
        // row = {'k': 1}; [row] * 3, protocol 2: shared references through the memo.
        let shared = b"\x80\x02]q\x00(}q\x01X\x01\x00\x00\x00kq\x02K\x01sh\x01h\x01e.";
        let rows: Vec<HashMap<String, i64>> = from_slice(shared).unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r["k"] == 1));
        // 2**64 - 1 and -2**100, protocol 2 (LONG1).
        let big = b"\x80\x02\x8a\t\xff\xff\xff\xff\xff\xff\xff\xff\x00.";
        assert_eq!(from_slice::<u64>(big).unwrap(), u64::MAX);
        let negative = b"\x80\x02\x8a\r\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xf0.";
        assert_eq!(from_slice::<i128>(negative).unwrap(), -(1i128 << 100));
    }

    #[test]
    fn cycles_depth_and_expansion_are_refused() {
        // l = []; l.append(l), protocol 2.
        let cycle = b"\x80\x02]q\x00h\x00a.";
        assert!(from_slice::<Vec<Vec<u8>>>(cycle).is_err());
        // A million nested lists.
        let mut deep = b"\x80\x02".to_vec();
        deep.extend(std::iter::repeat_n(b']', 1_000_000));
        deep.extend(std::iter::repeat_n(b'a', 999_999));
        deep.push(b'.');
        let err = from_slice::<serde::de::IgnoredAny>(&deep).unwrap_err();
        assert!(err.to_string().contains("nests deeper"), "{err}");
        // x = 0, then 64 times x = [x, x] through the memo: 2^64 values once expanded.
        let mut bomb = b"\x80\x04K\x00\x94".to_vec();
        for level in 0..64u32 {
            bomb.extend_from_slice(b"]\x94");
            for _ in 0..2 {
                bomb.push(b'j');
                bomb.extend_from_slice(&level.to_le_bytes());
                bomb.push(b'a');
            }
        }
        bomb.push(b'.');
        let err = from_slice::<serde::de::IgnoredAny>(&bomb).unwrap_err();
        assert!(err.to_string().contains("expand"), "{err}");
    }

    #[test]
    fn code_is_never_run() {
        // os.system('true') as a pickle: GLOBAL + REDUCE.
        let evil = b"cposix\nsystem\n(Vtrue\ntR.";
        let err = from_slice::<u8>(evil).unwrap_err();
        assert!(err.to_string().contains("calling code"), "{err}");
    }

    /// Protocol 0, as `pickle.dumps(value, protocol=0)` writes it: text opcodes, Latin-1 and
    /// `\\u` escapes in str, `I01` for True, `L…L` longs.
    #[test]
    fn protocol_zero() {
        let p0 = b"(lp0\nI1\naVa\xe9\\u20ac\np1\naF2.5\naNaI01\na(I1\nI2\ntp2\na(dp3\nVx\np4\n(lp5\nI3\nasaL1180591620717411303424L\na.";
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct Row(
            u8,
            String,
            f64,
            Option<u8>,
            bool,
            (u8, u8),
            HashMap<String, Vec<u8>>,
            u128,
        );
        let row: Row = from_slice(p0).unwrap();
        assert_eq!(row.1, "aé€");
        assert_eq!(row.6["x"], [3]);
        assert_eq!(row.7, 1 << 70);
    }
}
