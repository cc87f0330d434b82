//! A small, tolerant reader of PyTorch zip checkpoints (`torch.save` since 1.6).
//!
//! Training checkpoints such as the original LaVIN's `checkpoint-N.pth` hold more than a
//! state dict: `{'model': {...}, 'optimizer': {'state': {0: ...}}, 'epoch': 1, 'scaler': {...},
//! 'args': argparse.Namespace(...)}`. This reader runs a minimal pickle machine over
//! `<archive>/data.pkl` that keeps unknown classes and calls as opaque values instead of failing,
//! understands `torch._utils._rebuild_tensor_v2` over persistent storages, and exposes the
//! tensors found under one top-level key (nested dicts flattened with `.`). Tensor bytes are
//! read from `<archive>/data/<key>` only when asked for.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;

use super::host::{decode_f32, ElemType, HostTensor};
use crate::error::WeightsError;

const FORMAT: &str = "PyTorch checkpoint";
/// Deepest dict nesting followed when collecting tensors.
const MAX_DEPTH: usize = 64;

/// The element type of a torch storage class (`FloatStorage`, `LongStorage`, ...).
fn storage_dtype(class: &str) -> Result<ElemType, String> {
    Ok(match class {
        "FloatStorage" => ElemType::F32,
        "HalfStorage" => ElemType::F16,
        "BFloat16Storage" => ElemType::BF16,
        "DoubleStorage" => ElemType::F64,
        "LongStorage" => ElemType::I64,
        "IntStorage" => ElemType::I32,
        "ShortStorage" => ElemType::I16,
        "CharStorage" => ElemType::I8,
        "ByteStorage" => ElemType::U8,
        "BoolStorage" => ElemType::Bool,
        other => return Err(format!("unknown storage class `{other}`")),
    })
}

/// Where one tensor's elements live in the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// Element type of the storage; only floating-point tensors are read.
    pub dtype: ElemType,
    /// Storage key: the entry `<archive>/data/<key>`.
    pub storage: String,
    /// Offset into the storage, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn is_contiguous(&self) -> bool {
        let mut expected = 1usize;
        for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
            if n > 1 && s != expected {
                return false;
            }
            expected = expected.saturating_mul(n);
        }
        true
    }
}

#[derive(Debug, Clone)]
struct StorageRef {
    dtype: ElemType,
    key: String,
}

/// A value of the pickle machine. Containers are shared so memo references see later edits.
#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too wide for i64.
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Rc<(String, String)>),
    /// An object of a class or call this reader does not model.
    Opaque,
    /// An instance made by NEWOBJ (or `copyreg._reconstructor`) of a class, with the state its
    /// BUILD gave it: how `argparse.Namespace` is pickled.
    Object(Rc<Object>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    /// Something that looked like a tensor but could not be understood (why).
    Bad(Rc<str>),
}

/// A pickled instance: the state BUILD set (usually its `__dict__`).
#[derive(Debug)]
struct Object {
    state: RefCell<Option<Value>>,
}

impl Object {
    fn value() -> Value {
        Value::Object(Rc::new(Object {
            state: RefCell::new(None),
        }))
    }
}

/// A plain attribute value of a pickled object (the original training's `args` flags).
#[derive(Debug, Clone, PartialEq)]
pub enum PickleScalar {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Anything else (a list, a nested object, ...).
    Other,
}

impl PickleScalar {
    fn of(v: &Value) -> Self {
        match v {
            Value::None => Self::None,
            Value::Bool(b) => Self::Bool(*b),
            Value::Int(i) => Self::Int(*i),
            Value::Float(f) => Self::Float(*f),
            Value::Str(s) => Self::Str(s.to_string()),
            _ => Self::Other,
        }
    }
}

/// The string-keyed attributes of `v` when it is an object whose state is a dict.
fn object_fields(v: &Value) -> Option<BTreeMap<String, PickleScalar>> {
    let Value::Object(o) = v else { return None };
    let state = o.state.try_borrow().ok()?;
    let Some(Value::Dict(d)) = &*state else {
        return None;
    };
    let d = d.try_borrow().ok()?;
    Some(
        d.iter()
            .filter_map(|(k, v)| match k {
                Value::Str(k) => Some((k.to_string(), PickleScalar::of(v))),
                _ => None,
            })
            .collect(),
    )
}

impl Value {
    fn dict() -> Self {
        Value::Dict(Rc::new(RefCell::new(Vec::new())))
    }

    fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
    }

    fn as_usizes(&self) -> Option<Vec<usize>> {
        match self {
            Value::Tuple(t) => t.iter().map(Value::as_usize).collect(),
            Value::List(l) => l.borrow().iter().map(Value::as_usize).collect(),
            _ => None,
        }
    }

    /// A dict key as a flattened-name part.
    fn key_part(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
            _ => None,
        }
    }
}

/// The pickle machine over one `data.pkl`.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

type R<T> = Result<T, String>;

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> R<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> R<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn line(&mut self) -> R<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| format!("pickle truncated at byte {}", self.pos))?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "pickle: non-UTF-8 text line")?;
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> R<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "pickle: invalid UTF-8 string")?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn pop(&mut self) -> R<Value> {
        self.stack
            .pop()
            .ok_or_else(|| "pickle: stack underflow".to_string())
    }

    fn top(&mut self) -> R<&mut Value> {
        self.stack
            .last_mut()
            .ok_or_else(|| "pickle: stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let m = self.marks.pop().ok_or("pickle: no MARK")?;
        if m > self.stack.len() {
            return Err("pickle: MARK above the stack".into());
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&self, i: u64) -> R<Value> {
        self.memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("pickle: memo {i} unset"))
    }

    fn memo_put(&mut self, i: u64) -> R<()> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or("pickle: stack underflow")?;
        self.memo.insert(i, v);
        Ok(())
    }

    fn set_items(target: &Value, items: Vec<Value>) -> R<()> {
        if items.len() % 2 != 0 {
            return Err("pickle: odd number of SETITEMS values".into());
        }
        if let Value::Dict(d) = target {
            let mut d = d.borrow_mut();
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                d.push((k, v));
            }
        }
        // Items set on opaque objects are dropped.
        Ok(())
    }

    fn append(target: &Value, items: Vec<Value>) {
        if let Value::List(l) = target {
            l.borrow_mut().extend(items);
        }
    }

    fn run(mut self) -> R<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME
                }
                b'.' => return self.pop(),
                b'}' => self.stack.push(Value::dict()),
                b']' => self.stack.push(Value::List(Rc::default())),
                b')' => self.stack.push(Value::Tuple(Rc::default())),
                0x8f => self.stack.push(Value::Opaque), // EMPTY_SET
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "pickle: huge string")?;
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    self.take(n)?;
                    self.stack.push(Value::Bytes);
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    self.stack.push(Value::Bytes);
                }
                0x8e | 0x96 => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "pickle: huge bytes")?;
                    self.take(n)?;
                    self.stack.push(Value::Bytes);
                }
                b'V' => {
                    let s = self.line()?;
                    self.stack.push(Value::Str(Rc::from(s)));
                }
                b'S' => {
                    self.line()?;
                    self.stack.push(Value::Bytes);
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        self.u32()? as usize
                    };
                    let b = self.take(n)?;
                    let v = if n == 0 {
                        Value::Int(0)
                    } else if n <= 8 {
                        let fill = if b[n - 1] & 0x80 != 0 { 0xff } else { 0 };
                        let mut w = [fill; 8];
                        w[..n].copy_from_slice(b);
                        Value::Int(i64::from_le_bytes(w))
                    } else {
                        Value::BigInt
                    };
                    self.stack.push(v);
                }
                b'I' | b'L' => {
                    let s = self.line()?.trim_end_matches('L');
                    let v = match s {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => s.parse().map(Value::Int).unwrap_or(Value::BigInt),
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v));
                }
                b'F' => {
                    let v = self.line()?.trim().parse().unwrap_or(f64::NAN);
                    self.stack.push(Value::Float(v));
                }
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'N' => self.stack.push(Value::None),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("pickle: stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = Value::dict();
                    Self::set_items(&d, items)?;
                    self.stack.push(d);
                }
                0x91 => {
                    self.pop_mark()?;
                    self.stack.push(Value::Opaque); // FROZENSET
                }
                0x90 => {
                    self.pop_mark()?; // ADDITEMS (to a set)
                    self.top()?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    Self::set_items(self.top()?, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    Self::set_items(self.top()?, items)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    Self::append(self.top()?, vec![v]);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    Self::append(self.top()?, items);
                }
                b'q' => {
                    let i = self.u8()? as u64;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()? as u64;
                    self.memo_put(i)?;
                }
                b'p' => {
                    let i = self.line()?.parse().map_err(|_| "pickle: bad PUT index")?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u64;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()? as u64;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'g' => {
                    let i = self.line()?.parse().map_err(|_| "pickle: bad GET index")?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.stack.push(Value::Global(Rc::new((module, name))));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let v = match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            Value::Global(Rc::new((m.to_string(), n.to_string())))
                        }
                        _ => Value::Opaque,
                    };
                    self.stack.push(v);
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    self.stack.push(call(&f, &args, 0));
                }
                b'b' => {
                    // BUILD: kept on objects (a Namespace's flags), ignored elsewhere.
                    let state = self.pop()?;
                    if let Value::Object(o) = self.top()? {
                        if let Ok(mut s) = o.state.try_borrow_mut() {
                            *s = Some(state);
                        }
                    }
                }
                0x81 => {
                    self.pop()?;
                    let v = match self.pop()? {
                        Value::Global(_) => Object::value(),
                        _ => Value::Opaque,
                    };
                    self.stack.push(v); // NEWOBJ
                }
                0x92 => {
                    self.pop()?;
                    self.pop()?;
                    self.pop()?;
                    self.stack.push(Value::Opaque); // NEWOBJ_EX
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent(&pid));
                }
                b'P' => {
                    self.line()?;
                    self.stack.push(Value::Bad(Rc::from(
                        "text persistent id (PERSID) unsupported",
                    )));
                }
                0x97 => {} // NEXT_BUFFER-free READONLY_BUFFER: no-op
                other => {
                    return Err(format!(
                        "pickle: unsupported opcode 0x{other:02x} at byte {}",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

/// `('storage', torch.FloatStorage, key, location, numel)` -> a storage.
fn persistent(pid: &Value) -> Value {
    let Value::Tuple(t) = pid else {
        return Value::Bad(Rc::from("persistent id is not a tuple"));
    };
    match t.as_slice() {
        [Value::Str(kind), Value::Global(g), key, _location, _numel, ..]
            if &**kind == "storage" =>
        {
            let key = match key {
                Value::Str(s) => s.to_string(),
                Value::Int(i) => i.to_string(),
                _ => return Value::Bad(Rc::from("storage key is not a string")),
            };
            match storage_dtype(&g.1) {
                Ok(dtype) => Value::Storage(Rc::new(StorageRef { dtype, key })),
                Err(e) => Value::Bad(Rc::from(e)),
            }
        }
        _ => Value::Bad(Rc::from("unsupported persistent id")),
    }
}

/// REDUCE: the calls this reader understands; anything else is opaque.
fn call(f: &Value, args: &Value, depth: usize) -> Value {
    let Value::Global(g) = f else {
        return Value::Opaque;
    };
    let empty = Vec::new();
    let a: &[Value] = match args {
        Value::Tuple(t) => t,
        _ => &empty,
    };
    match (g.0.as_str(), g.1.as_str()) {
        ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict")
            if a.is_empty() =>
        {
            Value::dict()
        }
        // Protocols 0 and 1 pickle plain instances (a Namespace) this way.
        ("copy_reg", "_reconstructor") | ("copyreg", "_reconstructor") => Object::value(),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            rebuild_tensor(a)
        }
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => match a.first() {
            Some(t @ (Value::Tensor(_) | Value::Bad(_))) => t.clone(),
            _ => Value::Bad(Rc::from("_rebuild_parameter without a tensor")),
        },
        ("torch._tensor", "_rebuild_from_type_v2") | ("torch._tensor", "_rebuild_from_type")
            if depth < 4 =>
        {
            match a {
                [func, _ty, inner, ..] => call(func, inner, depth + 1),
                _ => Value::Opaque,
            }
        }
        _ => Value::Opaque,
    }
}

fn rebuild_tensor(a: &[Value]) -> Value {
    let (storage, offset, size, stride) = match a {
        [s, o, sz, st, ..] => (s, o, sz, st),
        _ => return Value::Bad(Rc::from("_rebuild_tensor_v2 with too few arguments")),
    };
    let storage = match storage {
        Value::Storage(s) => s,
        Value::Bad(b) => return Value::Bad(b.clone()),
        _ => return Value::Bad(Rc::from("_rebuild_tensor_v2 without a storage")),
    };
    let (Some(offset), Some(shape), Some(stride)) =
        (offset.as_usize(), size.as_usizes(), stride.as_usizes())
    else {
        return Value::Bad(Rc::from("_rebuild_tensor_v2 with a bad offset/size/stride"));
    };
    if shape.len() != stride.len() {
        return Value::Bad(Rc::from(
            "_rebuild_tensor_v2: size and stride differ in rank",
        ));
    }
    Value::Tensor(Rc::new(TensorRef {
        dtype: storage.dtype,
        storage: storage.key.clone(),
        offset,
        shape,
        stride,
    }))
}

/// Collects the tensors of `v` (a dict) under `prefix`; a non-tensor that should have been
/// one is an error.
fn flatten(v: &Value, prefix: &str, depth: usize, out: &mut BTreeMap<String, TensorRef>) -> R<()> {
    match v {
        Value::Tensor(t) => {
            out.insert(prefix.to_string(), (**t).clone());
        }
        Value::Bad(why) => return Err(format!("`{prefix}`: {why}")),
        Value::Dict(d) if depth < MAX_DEPTH => {
            let d = d.try_borrow().map_err(|_| "pickle: dict borrowed twice")?;
            for (k, v) in d.iter() {
                let Some(k) = k.key_part() else { continue };
                let name = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &name, depth + 1, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The tensors of one torch zip checkpoint, read lazily.
pub struct TorchPickleReader {
    path: PathBuf,
    zip: Mutex<zip::ZipArchive<std::fs::File>>,
    /// `<archive>` of `<archive>/data.pkl`.
    prefix: String,
    tensors: BTreeMap<String, TensorRef>,
    /// The integer entries of a top-level dict (a training checkpoint's `epoch`).
    ints: BTreeMap<String, i64>,
    /// The attributes of the objects of a top-level dict (a training checkpoint's `args`).
    objects: BTreeMap<String, BTreeMap<String, PickleScalar>>,
}

impl std::fmt::Debug for TorchPickleReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchPickleReader")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn read_entry(
    zip: &mut zip::ZipArchive<std::fs::File>,
    name: &str,
    limit: Option<u64>,
) -> R<Vec<u8>> {
    let mut f = zip
        .by_name(name)
        .map_err(|e| format!("zip entry `{name}`: {e}"))?;
    let size = f.size();
    if let Some(l) = limit {
        if size > l {
            return Err(format!("zip entry `{name}` is {size} bytes, over {l}"));
        }
    }
    let mut buf = Vec::with_capacity(size.min(1 << 30) as usize);
    f.read_to_end(&mut buf)
        .map_err(|e| format!("zip entry `{name}`: {e}"))?;
    Ok(buf)
}

impl TorchPickleReader {
    /// Opens `path` and indexes the tensors under `top_level_key` (the whole pickle when
    /// `None`).
    pub fn open(path: &Path, top_level_key: Option<&str>) -> Result<Self, WeightsError> {
        let err = |reason: String| WeightsError::format(path, FORMAT, reason);
        let file = std::fs::File::open(path).map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut zip =
            zip::ZipArchive::new(file).map_err(|e| err(format!("not a zip archive: {e}")))?;
        let pkl = zip
            .file_names()
            .filter(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
            .min_by_key(|n| n.len())
            .map(str::to_string)
            .ok_or_else(|| err("no `data.pkl` in the archive".into()))?;
        let prefix = pkl
            .strip_suffix("data.pkl")
            .unwrap_or("")
            .trim_end_matches('/')
            .to_string();
        let join = |n: &str| {
            if prefix.is_empty() {
                n.to_string()
            } else {
                format!("{prefix}/{n}")
            }
        };
        if zip.index_for_name(&join("byteorder")).is_some() {
            let b = read_entry(&mut zip, &join("byteorder"), Some(64)).map_err(err)?;
            if b.trim_ascii() != b"little" {
                return Err(err("big-endian checkpoint".into()));
            }
        }
        let bytes = read_entry(&mut zip, &pkl, None).map_err(err)?;
        let root = Machine::new(&bytes).run().map_err(err)?;
        let ints = match &root {
            Value::Dict(d) => d
                .borrow()
                .iter()
                .filter_map(|(k, v)| match (k, v) {
                    (Value::Str(k), Value::Int(i)) => Some((k.to_string(), *i)),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        let objects = match &root {
            Value::Dict(d) => d
                .borrow()
                .iter()
                .filter_map(|(k, v)| match k {
                    Value::Str(k) => object_fields(v).map(|f| (k.to_string(), f)),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        let mut tensors = BTreeMap::new();
        let sub = match top_level_key {
            None => root,
            Some(k) => {
                let Value::Dict(d) = &root else {
                    return Err(err(format!(
                        "top level is not a dict, so it has no key `{k}`"
                    )));
                };
                let found = d
                    .borrow()
                    .iter()
                    .rev()
                    .find(|(key, _)| matches!(key, Value::Str(s) if &**s == k))
                    .map(|(_, v)| v.clone());
                found.ok_or_else(|| err(format!("no top-level key `{k}`")))?
            }
        };
        if !matches!(sub, Value::Dict(_)) {
            return Err(err(match top_level_key {
                Some(k) => format!("top-level key `{k}` is not a dict of tensors"),
                None => "top level is not a dict of tensors".into(),
            }));
        }
        flatten(&sub, "", 0, &mut tensors).map_err(err)?;
        Ok(Self {
            path: path.to_path_buf(),
            zip: Mutex::new(zip),
            prefix,
            tensors,
            ints,
            objects,
        })
    }

    /// An integer entry of the pickle's top-level dict (e.g. `epoch`), if there is one.
    pub fn top_level_int(&self, key: &str) -> Option<i64> {
        self.ints.get(key).copied()
    }

    /// The attributes of the object under a top-level key, when its state is a plain dict:
    /// the original training checkpoint's `args` (`argparse.Namespace`) flags.
    pub fn top_level_object(&self, key: &str) -> Option<&BTreeMap<String, PickleScalar>> {
        self.objects.get(key)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flattened tensor names, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Where `key`'s data lives, without reading it.
    pub fn tensor_ref(&self, key: &str) -> Option<&TensorRef> {
        self.tensors.get(key)
    }

    /// Reads `key` as f32 (`Ok(None)` when absent).
    pub fn get(&self, key: &str) -> Result<Option<HostTensor>, WeightsError> {
        let Some(t) = self.tensors.get(key) else {
            return Ok(None);
        };
        let err = |reason: String| {
            WeightsError::format(&self.path, FORMAT, format!("tensor `{key}`: {reason}"))
        };
        if !t.dtype.is_float() {
            return Err(WeightsError::Dtype {
                path: self.path.clone(),
                key: key.to_string(),
                dtype: t.dtype.name().to_string(),
            });
        }
        if !t.is_contiguous() {
            return Err(err(format!(
                "non-contiguous (shape {:?}, stride {:?})",
                t.shape, t.stride
            )));
        }
        let numel = t.numel();
        let el = t.dtype.size();
        let start = t.offset.checked_mul(el);
        let end = t.offset.checked_add(numel).and_then(|e| e.checked_mul(el));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(err("offset/size overflow".into()));
        };
        let name = if self.prefix.is_empty() {
            format!("data/{}", t.storage)
        } else {
            format!("{}/data/{}", self.prefix, t.storage)
        };
        let bytes = {
            let mut zip = self
                .zip
                .lock()
                .map_err(|_| err("archive lock poisoned".into()))?;
            read_entry(&mut zip, &name, None).map_err(err)?
        };
        if end > bytes.len() {
            return Err(err(format!(
                "storage `{}` has {} bytes, the tensor needs {end}",
                t.storage,
                bytes.len()
            )));
        }
        let data = decode_f32(t.dtype, &bytes[start..end]).map_err(|e| err(e.to_string()))?;
        Ok(Some(HostTensor {
            shape: t.shape.clone(),
            data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_and_truncated_pickles_error_without_panicking() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..2000usize {
            let mut v = Vec::with_capacity(len % 200);
            for _ in 0..len % 200 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.push((seed >> 24) as u8);
            }
            let _ = Machine::new(&v).run();
        }
        // a dict with an int key, a Namespace-like object and a truncated tail
        let good: &[u8] = b"\x80\x02}q\x00(K\x00X\x01\x00\x00\x00aX\x04\x00\x00\x00argscargparse\nNamespace\nq\x01)\x81}bu.";
        assert!(Machine::new(good).run().is_ok());
        for n in 0..good.len() {
            assert!(Machine::new(&good[..n]).run().is_err());
        }
    }

    #[test]
    fn namespace_flags_are_read_at_protocols_2_and_0() {
        // pickle.dumps({'epoch': 3, 'args': argparse.Namespace(adapter_type='block',
        // temperature=5.0, adapter_dim=4, use_vicuna=True, bits=None)}, protocol=2 / 0)
        let p2: &[u8] = b"\x80\x02}q\x00(X\x05\x00\x00\x00epochq\x01K\x03X\x04\x00\x00\x00argsq\x02cargparse\nNamespace\nq\x03)\x81q\x04}q\x05(X\x0c\x00\x00\x00adapter_typeq\x06X\x05\x00\x00\x00blockq\x07X\x0b\x00\x00\x00temperatureq\x08G@\x14\x00\x00\x00\x00\x00\x00X\x0b\x00\x00\x00adapter_dimq\x09K\x04X\x0a\x00\x00\x00use_vicunaq\x0a\x88X\x04\x00\x00\x00bitsq\x0bNubu.";
        let p0: &[u8] = b"(dp0\nVepoch\np1\nI3\nsVargs\np2\nccopy_reg\n_reconstructor\np3\n(cargparse\nNamespace\np4\nc__builtin__\nobject\np5\nNtp6\nRp7\n(dp8\nVadapter_type\np9\nVblock\np10\nsVtemperature\np11\nF5.0\nsVadapter_dim\np12\nI4\nsVuse_vicuna\np13\nI01\nsVbits\np14\nNsbs.";
        for bytes in [p2, p0] {
            let Value::Dict(root) = Machine::new(bytes).run().unwrap() else {
                panic!("top level is a dict")
            };
            let root = root.borrow();
            let args = root
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if &**s == "args"))
                .map(|(_, v)| object_fields(v).expect("a Namespace with a dict state"))
                .unwrap();
            assert_eq!(args["adapter_type"], PickleScalar::Str("block".into()));
            assert_eq!(args["temperature"], PickleScalar::Float(5.0));
            assert_eq!(args["adapter_dim"], PickleScalar::Int(4));
            assert_eq!(args["use_vicuna"], PickleScalar::Bool(true));
            assert_eq!(args["bits"], PickleScalar::None);
            assert_eq!(args.len(), 5);
        }
    }
}
