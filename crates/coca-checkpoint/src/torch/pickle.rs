//! A pickle VM for the subset of pickle that `torch.save` writes, built to be fed hostile bytes.
//!
//! `torch.save` writes its object tree with pickle protocol 2. Reading that tree needs no Python: the
//! VM only records what the pickle describes (a call of `torch._utils._rebuild_tensor_v2` becomes a
//! [`Value::Reduce`] node) and [`super::state_dict`] interprets the nodes it knows. Every resource a
//! pickle can make the reader spend is bounded by the pickle's own size or by [`Limits`]:
//!
//! * Memoised objects are shared (`Rc`), never copied, so `BINGET` costs one pointer however large the
//!   object is: a pickle that reuses a memoised list a million times stays as small in memory as on
//!   disk.
//! * Lengths (strings, lines) are checked against the bytes that are left before anything is allocated.
//! * Objects are counted and their nesting depth is limited. The depth of every object is final when it
//!   is created, because a list or dict may only be filled while nothing contains it yet (which is how
//!   pickle writes every non-recursive structure). That rule also rules out reference cycles, so the
//!   whole tree is freed when the root is dropped, and walking or dropping it recurses at most
//!   [`Limits::max_depth`] levels.
//! * A global outside the few that a state dict uses is refused where it appears, so a pickle that
//!   would run code when Python loads it (`os.system`, `builtins.eval`, ...) is reported as such.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

/// How much a pickle may make the VM build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Objects created, memo references not counted (they share an existing object).
    pub max_objects: usize,
    /// Nesting depth: a scalar has depth 1, a tuple of scalars depth 2, and so on.
    pub max_depth: u32,
}

impl Limits {
    /// Far above what any `torch.save` pickle needs (a few objects per tensor, nesting about ten
    /// deep even in training checkpoints), far below what exhausts memory or the stack.
    pub const CHECKPOINT: Limits = Limits {
        max_objects: 1 << 23,
        max_depth: 256,
    };
}

/// A shared reference to an unpickled object.
pub(crate) type Obj = Rc<Node>;

/// One unpickled object and the bookkeeping that keeps the tree finite.
pub(crate) struct Node {
    /// What the object is.
    pub value: Value,
    /// 1 for a scalar, 1 + the deepest child for a container.
    depth: Cell<u32>,
    /// Whether another object holds this one; a held list or dict can no longer change.
    held: Cell<bool>,
}

/// The kinds of objects a `torch.save` pickle describes.
pub(crate) enum Value {
    /// Python's `None`.
    None,
    /// A bool.
    Bool(bool),
    /// An int that fits 64 bits.
    Int(i64),
    /// An int wider than 64 bits (kept only to be reported, never used as a size).
    BigInt,
    /// A float.
    Float(f64),
    /// A str.
    Str(String),
    /// A global reference `module.name` (only allowed ones exist, see [`is_allowed_global`]).
    Global {
        /// The module, e.g. `torch._utils`.
        module: String,
        /// The name inside the module, e.g. `_rebuild_tensor_v2`.
        name: String,
    },
    /// A tuple.
    Tuple(Vec<Obj>),
    /// A list.
    List(RefCell<Vec<Obj>>),
    /// A dict (or `OrderedDict`), in insertion order; duplicate keys are kept.
    Dict(RefCell<Vec<(Obj, Obj)>>),
    /// `callable(*args)` as the pickle asks for it; never called.
    Reduce {
        /// What would be called.
        callable: Obj,
        /// Its arguments (normally a tuple).
        args: Obj,
    },
    /// `object.__setstate__(state)` on an object other than a dict.
    Build {
        /// The object receiving the state.
        object: Obj,
        /// The state.
        state: Obj,
    },
    /// A persistent id: torch's reference to a storage in the archive.
    Persistent(Obj),
}

/// Shallow on purpose: a pickle can share one object many times over, so printing the whole tree
/// could take time exponential in the pickle's size.
impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Node {
    /// A short phrase for the object's kind, for messages ("a list", "the class torch.FloatStorage").
    /// It never looks inside the object, so it costs the same for any object.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::None => "None".to_string(),
            Value::Bool(_) => "a bool".to_string(),
            Value::Int(_) | Value::BigInt => "an int".to_string(),
            Value::Float(_) => "a float".to_string(),
            Value::Str(_) => "a string".to_string(),
            Value::Global { module, name } => format!("the class {module}.{name}"),
            Value::Tuple(items) => format!("a tuple of {}", items.len()),
            Value::List(_) => "a list".to_string(),
            Value::Dict(_) => "a dict".to_string(),
            Value::Reduce { callable, .. }
            | Value::Build {
                object: callable, ..
            } => match &callable.value {
                Value::Global { module, name } => format!("an object built by {module}.{name}"),
                _ => "an object".to_string(),
            },
            Value::Persistent(_) => "a persistent reference".to_string(),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a non-negative size, if it is an int that fits `usize`.
    pub fn as_usize(&self) -> Option<usize> {
        match self.value {
            Value::Int(v) => usize::try_from(v).ok(),
            _ => None,
        }
    }

    /// The items, if this is a tuple.
    pub fn as_tuple(&self) -> Option<&[Obj]> {
        match &self.value {
            Value::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The value for the first key equal to the string `key`, if this is a dict.
    pub fn dict_get(&self, key: &str) -> Option<Obj> {
        match &self.value {
            Value::Dict(items) => items
                .borrow()
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| Rc::clone(v)),
            _ => None,
        }
    }
}

/// Why a pickle was refused, and at which byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PickleError {
    /// Offset of the opcode that failed.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.reason, self.offset)
    }
}

/// Whether a pickle may name `module.name`: the types and rebuild functions that `torch.save` writes
/// for a state dict, or a training checkpoint holding one, and that `torch.load(weights_only=True)`
/// also accepts. Every one of them only builds data; anything else (`os.system`, `builtins.eval`,
/// `subprocess.Popen`, ...) would run code when Python loads the file.
pub(crate) fn is_allowed_global(module: &str, name: &str) -> bool {
    match module {
        "collections" => matches!(name, "OrderedDict"),
        "torch._utils" => name.starts_with("_rebuild_"),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.nn.parameter" => name == "Parameter",
        "torch.serialization" => name == "_get_layout",
        "torch" => {
            name.ends_with("Storage")
                || matches!(name, "Size" | "Tensor" | "device" | "dtype")
                || is_torch_dtype_name(name)
        }
        // Python 3 writes `bytes` as `_codecs.encode(text, 'latin1')` in protocol 2.
        "_codecs" => name == "encode",
        "builtins" | "__builtin__" => matches!(name, "set" | "frozenset" | "bytearray" | "complex"),
        _ => false,
    }
}

/// `torch.float32` and friends, pickled by name.
fn is_torch_dtype_name(name: &str) -> bool {
    matches!(
        name,
        "float16"
            | "float32"
            | "float64"
            | "bfloat16"
            | "half"
            | "float"
            | "double"
            | "int8"
            | "int16"
            | "int32"
            | "int64"
            | "uint8"
            | "bool"
            | "long"
            | "int"
            | "short"
    )
}

/// Decode `bytes`, a whole pickle, into its root object.
pub(crate) fn unpickle(bytes: &[u8], limits: Limits) -> Result<Obj, PickleError> {
    let mut vm = Vm {
        input: bytes,
        pos: 0,
        op_start: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        created: 0,
        limits,
    };
    vm.run()
}

struct Vm<'a> {
    input: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for messages.
    op_start: usize,
    stack: Vec<Obj>,
    /// Stack lengths at each MARK still open.
    marks: Vec<usize>,
    memo: HashMap<u32, Obj>,
    created: usize,
    limits: Limits,
}

impl<'a> Vm<'a> {
    fn run(&mut self) -> Result<Obj, PickleError> {
        loop {
            self.op_start = self.pos;
            let op = self.take(1)?[0];
            match op {
                // PROTO: any version; unsupported opcodes of later protocols are refused below.
                0x80 => {
                    self.take(1)?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.push_new(Value::None)?,
                0x88 => self.push_new(Value::Bool(true))?,
                0x89 => self.push_new(Value::Bool(false))?,
                b'K' => {
                    let v = self.take(1)?[0];
                    self.push_new(Value::Int(i64::from(v)))?
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push_new(Value::Int(i64::from(v)))?
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push_new(Value::Int(i64::from(v)))?
                }
                0x8a => {
                    let n = usize::from(self.take(1)?[0]);
                    let digits = self.take(n)?;
                    self.push_new(long1(digits))?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push_new(Value::Float(v))?
                }
                b'X' => {
                    let len = u32::from_le_bytes(self.array()?);
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    let raw = self.take(len)?;
                    let text = std::str::from_utf8(raw)
                        .map_err(|_| self.error("a string that is not valid UTF-8".to_string()))?
                        .to_string();
                    self.push_new(Value::Str(text))?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    if !is_allowed_global(&module, &name) {
                        return Err(self.error(format!(
                            "refused the global '{module}.{name}': loading it in Python could run \
                             code, and a PyTorch checkpoint needs only torch's tensor and storage \
                             types and collections.OrderedDict"
                        )));
                    }
                    self.push_new(Value::Global { module, name })?
                }
                b')' => self.push_new(Value::Tuple(Vec::new()))?,
                b']' => self.push_new(Value::List(RefCell::new(Vec::new())))?,
                b'}' => self.push_new(Value::Dict(RefCell::new(Vec::new())))?,
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n + self.open_mark() {
                        return Err(self.error(format!("TUPLE{n} needs {n} objects on the stack")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_container(Value::Tuple(items))?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_container(Value::Tuple(items))?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_container(Value::List(RefCell::new(items)))?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items).ok_or_else(|| self.odd_items())?;
                    self.push_container(Value::Dict(RefCell::new(pairs)))?
                }
                b'a' => {
                    let item = self.pop()?;
                    self.extend_list(vec![item])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.extend_dict(vec![(key, value)])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items).ok_or_else(|| self.odd_items())?;
                    self.extend_dict(pairs)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push_container(Value::Persistent(pid))?
                }
                // REDUCE and NEWOBJ: record the call, do not make it.
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.reduce(callable, args)?
                }
                b'b' => {
                    let state = self.pop()?;
                    let object = self.pop()?;
                    self.build(object, state)?
                }
                b'q' => {
                    let id = self.take(1)?[0];
                    self.memo_put(u32::from(id))?
                }
                b'r' => {
                    let id = u32::from_le_bytes(self.array()?);
                    self.memo_put(id)?
                }
                b'h' => {
                    let id = self.take(1)?[0];
                    self.memo_get(u32::from(id))?
                }
                b'j' => {
                    let id = u32::from_le_bytes(self.array()?);
                    self.memo_get(id)?
                }
                other => {
                    return Err(self.error(format!(
                        "unsupported opcode 0x{other:02x} (only the pickle opcodes of \
                         torch.save's default protocol 2 are supported)"
                    )))
                }
            }
        }
    }

    fn error(&self, reason: String) -> PickleError {
        PickleError {
            offset: self.op_start,
            reason,
        }
    }

    fn odd_items(&self) -> PickleError {
        self.error("a dict built from an odd number of items".to_string())
    }

    /// The next `n` bytes; an error, not an allocation, when fewer are left.
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let left = self.input.len() - self.pos;
        if n > left {
            return Err(self.error(format!(
                "the pickle ends early: {n} more bytes needed, {left} left (truncated, or a length \
                 that lies)"
            )));
        }
        let input = self.input;
        let start = self.pos;
        self.pos += n;
        Ok(&input[start..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A newline-terminated ASCII line (the arguments of GLOBAL).
    fn line(&mut self) -> Result<String, PickleError> {
        const MAX_LINE: usize = 256;
        let rest = &self.input[self.pos..];
        let window = &rest[..rest.len().min(MAX_LINE + 1)];
        let Some(len) = window.iter().position(|&b| b == b'\n') else {
            return Err(self.error(format!(
                "a GLOBAL name without a newline in its first {MAX_LINE} bytes"
            )));
        };
        let text = std::str::from_utf8(&window[..len])
            .ok()
            .filter(|t| t.is_ascii())
            .ok_or_else(|| self.error("a GLOBAL name that is not ASCII".to_string()))?
            .to_string();
        self.pos += len + 1;
        Ok(text)
    }

    /// Where the innermost open MARK sits (0 when none is open): objects below it are not
    /// available to opcodes that pop.
    fn open_mark(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Obj, PickleError> {
        if self.stack.len() <= self.open_mark() {
            return Err(self.error("an opcode pops more objects than the stack holds".to_string()));
        }
        self.stack.pop().ok_or_else(|| {
            self.error("an opcode pops more objects than the stack holds".to_string())
        })
    }

    fn pop_mark(&mut self) -> Result<Vec<Obj>, PickleError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.error("an opcode needs a MARK and none is open".to_string()))?;
        Ok(self.stack.split_off(mark))
    }

    fn count(&mut self) -> Result<(), PickleError> {
        self.created += 1;
        if self.created > self.limits.max_objects {
            return Err(self.error(format!(
                "the pickle creates more than {} objects, far more than a checkpoint needs",
                self.limits.max_objects
            )));
        }
        Ok(())
    }

    /// Push a new object without children.
    fn push_new(&mut self, value: Value) -> Result<(), PickleError> {
        self.count()?;
        self.stack.push(Rc::new(Node {
            value,
            depth: Cell::new(1),
            held: Cell::new(false),
        }));
        Ok(())
    }

    /// Push a new object whose children are already in `value`; they become held.
    fn push_container(&mut self, value: Value) -> Result<(), PickleError> {
        self.count()?;
        let mut deepest = 0;
        let mut hold = |child: &Obj| {
            child.held.set(true);
            deepest = deepest.max(child.depth.get());
        };
        match &value {
            Value::Tuple(items) => items.iter().for_each(&mut hold),
            Value::List(items) => items.borrow().iter().for_each(&mut hold),
            Value::Dict(items) => items.borrow().iter().for_each(|(k, v)| {
                hold(k);
                hold(v);
            }),
            Value::Reduce {
                callable: a,
                args: b,
            }
            | Value::Build {
                object: a,
                state: b,
            } => {
                hold(a);
                hold(b);
            }
            Value::Persistent(a) => hold(a),
            _ => {}
        }
        let depth = self.checked_depth(deepest)?;
        self.stack.push(Rc::new(Node {
            value,
            depth: Cell::new(depth),
            held: Cell::new(false),
        }));
        Ok(())
    }

    fn checked_depth(&self, deepest_child: u32) -> Result<u32, PickleError> {
        let depth = deepest_child.saturating_add(1);
        if depth > self.limits.max_depth {
            return Err(self.error(format!(
                "objects nested more than {} deep, far deeper than a checkpoint needs",
                self.limits.max_depth
            )));
        }
        Ok(depth)
    }

    /// The list or dict on top of the stack, checked to be still open for changes, and the
    /// children about to go into it: none may be the target itself (that would be a cycle).
    fn mutable_top<'c>(
        &self,
        what: &str,
        children: impl Iterator<Item = &'c Obj>,
    ) -> Result<Obj, PickleError> {
        let top = self
            .stack
            .last()
            .filter(|_| self.stack.len() > self.open_mark())
            .ok_or_else(|| self.error(format!("{what} with no object to add to")))?;
        if top.held.get() {
            return Err(self.error(format!(
                "{what} changes {} that another object already holds (a self-referencing \
                 structure, which a checkpoint never contains)",
                top.describe()
            )));
        }
        let mut deepest = 0;
        for child in children {
            if Rc::ptr_eq(child, top) {
                return Err(self.error(format!(
                    "{what} puts {} inside itself (a self-referencing structure, which a \
                     checkpoint never contains)",
                    top.describe()
                )));
            }
            deepest = deepest.max(child.depth.get());
        }
        let depth = self.checked_depth(deepest)?.max(top.depth.get());
        top.depth.set(depth);
        Ok(Rc::clone(top))
    }

    fn extend_list(&mut self, items: Vec<Obj>) -> Result<(), PickleError> {
        let top = self.mutable_top("APPEND", items.iter())?;
        let Value::List(list) = &top.value else {
            return Err(self.error(format!("APPEND to {}, not a list", top.describe())));
        };
        items.iter().for_each(|i| i.held.set(true));
        list.borrow_mut().extend(items);
        Ok(())
    }

    fn extend_dict(&mut self, pairs: Vec<(Obj, Obj)>) -> Result<(), PickleError> {
        let top = self.mutable_top("SETITEM", pairs.iter().flat_map(|(k, v)| [k, v]))?;
        let Value::Dict(dict) = &top.value else {
            return Err(self.error(format!("SETITEM on {}, not a dict", top.describe())));
        };
        for (k, v) in &pairs {
            k.held.set(true);
            v.held.set(true);
        }
        dict.borrow_mut().extend(pairs);
        Ok(())
    }

    fn reduce(&mut self, callable: Obj, args: Obj) -> Result<(), PickleError> {
        if let Value::Global { module, name } = &callable.value {
            // `OrderedDict()`: the items follow as SETITEMS, so an empty dict stands in for it.
            if module == "collections" && name == "OrderedDict" {
                return self.push_new(Value::Dict(RefCell::new(Vec::new())));
            }
        }
        self.push_container(Value::Reduce { callable, args })
    }

    /// BUILD: a dict state given to a dict (how an `OrderedDict` carries attributes such as the
    /// `_metadata` of a state dict) is merged into it; any other pair is recorded.
    fn build(&mut self, object: Obj, state: Obj) -> Result<(), PickleError> {
        if let (Value::Dict(_), Value::Dict(items)) = (&object.value, &state.value) {
            let items: Vec<(Obj, Obj)> = items.borrow().clone();
            self.stack.push(object);
            return self.extend_dict(items);
        }
        self.push_container(Value::Build { object, state })
    }

    fn memo_put(&mut self, id: u32) -> Result<(), PickleError> {
        let top = self
            .stack
            .last()
            .ok_or_else(|| self.error("BINPUT with an empty stack".to_string()))?;
        self.memo.insert(id, Rc::clone(top));
        Ok(())
    }

    fn memo_get(&mut self, id: u32) -> Result<(), PickleError> {
        let obj = self
            .memo
            .get(&id)
            .ok_or_else(|| self.error(format!("BINGET of memo entry {id}, which was never set")))?;
        self.stack.push(Rc::clone(obj));
        Ok(())
    }
}

/// Split `[k0, v0, k1, v1, ...]` into pairs; `None` for an odd count.
fn pairs(items: Vec<Obj>) -> Option<Vec<(Obj, Obj)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        out.push((k, v));
    }
    Some(out)
}

/// LONG1's little-endian two's-complement digits.
fn long1(digits: &[u8]) -> Value {
    if digits.is_empty() {
        return Value::Int(0);
    }
    if digits.len() > 8 {
        return Value::BigInt;
    }
    let negative = digits[digits.len() - 1] & 0x80 != 0;
    let mut bytes = [if negative { 0xff } else { 0 }; 8];
    bytes[..digits.len()].copy_from_slice(digits);
    Value::Int(i64::from_le_bytes(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes pickle bytes opcode by opcode (starting with PROTO 2), for tests.
    pub(crate) struct Pickle(pub Vec<u8>);

    impl Pickle {
        pub fn new() -> Self {
            Pickle(vec![0x80, 2])
        }

        /// Raw opcodes.
        pub fn op(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }

        pub fn mark(self) -> Self {
            self.op(b"(")
        }

        /// BINUNICODE.
        pub fn str(self, s: &str) -> Self {
            let len = u32::try_from(s.len()).unwrap().to_le_bytes();
            self.op(b"X").op(&len).op(s.as_bytes())
        }

        /// BININT.
        pub fn int(self, v: i32) -> Self {
            self.op(b"J").op(&v.to_le_bytes())
        }

        /// A tuple of BININTs.
        pub fn ints(self, v: &[i32]) -> Self {
            v.iter().fold(self.mark(), |p, &i| p.int(i)).op(b"t")
        }

        pub fn global(self, module: &str, name: &str) -> Self {
            self.op(b"c")
                .op(module.as_bytes())
                .op(b"\n")
                .op(name.as_bytes())
                .op(b"\n")
        }

        /// Append STOP and run the VM with the checkpoint limits.
        pub fn run(self) -> Result<Obj, PickleError> {
            self.run_with(Limits::CHECKPOINT)
        }

        pub fn run_with(self, limits: Limits) -> Result<Obj, PickleError> {
            unpickle(&self.op(b".").0, limits)
        }

        /// [`Pickle::run`], which must succeed.
        pub fn finish(self) -> Obj {
            self.run().unwrap()
        }
    }

    fn int_of(o: &Obj) -> i64 {
        match o.value {
            Value::Int(v) => v,
            _ => panic!("not an int: {o:?}"),
        }
    }

    fn tuple_of(o: &Obj) -> &[Obj] {
        o.as_tuple().unwrap_or_else(|| panic!("not a tuple: {o:?}"))
    }

    fn list_len(o: &Obj) -> usize {
        match &o.value {
            Value::List(items) => items.borrow().len(),
            _ => panic!("not a list: {o:?}"),
        }
    }

    fn reason(p: Pickle) -> String {
        p.run().unwrap_err().reason
    }

    #[test]
    fn scalars() {
        assert!(matches!(Pickle::new().op(b"N").finish().value, Value::None));
        assert!(matches!(
            Pickle::new().op(b"\x88").finish().value,
            Value::Bool(true)
        ));
        assert!(matches!(
            Pickle::new().op(b"\x89").finish().value,
            Value::Bool(false)
        ));
        assert_eq!(int_of(&Pickle::new().op(b"K\xff").finish()), 255);
        assert_eq!(int_of(&Pickle::new().op(b"M\x01\x02").finish()), 0x0201);
        assert_eq!(int_of(&Pickle::new().int(-7).finish()), -7);
        // LONG1: little-endian two's complement of any width.
        assert_eq!(int_of(&Pickle::new().op(b"\x8a\x00").finish()), 0);
        assert_eq!(
            int_of(&Pickle::new().op(b"\x8a\x02\x00\x80").finish()),
            -0x8000
        );
        assert_eq!(
            int_of(&Pickle::new().op(b"\x8a\x03\x00\x80\x00").finish()),
            0x8000
        );
        assert_eq!(int_of(&Pickle::new().op(b"\x8a\x01\xff").finish()), -1);
        let wide = Pickle::new().op(b"\x8a\x09").op(&[1; 9]).finish();
        assert!(matches!(wide.value, Value::BigInt));
        assert_eq!(wide.as_usize(), None);
        let float = Pickle::new().op(b"G").op(&1.5f64.to_be_bytes()).finish();
        assert!(matches!(float.value, Value::Float(v) if v == 1.5));
        assert_eq!(Pickle::new().str("héllo").finish().as_str(), Some("héllo"));
        assert!(reason(Pickle::new().op(b"X\x01\x00\x00\x00\xff")).contains("UTF-8"));
    }

    #[test]
    fn tuples() {
        assert!(tuple_of(&Pickle::new().op(b")").finish()).is_empty());
        for (n, op) in [(1, 0x85u8), (2, 0x86), (3, 0x87)] {
            let p = (0..n).fold(Pickle::new(), |p, i| p.int(i));
            let t = p.op(&[op]).finish();
            let got: Vec<i64> = tuple_of(&t).iter().map(int_of).collect();
            assert_eq!(got, (0..i64::from(n)).collect::<Vec<_>>());
        }
        let t = Pickle::new().ints(&[4, 5]).finish();
        assert_eq!(tuple_of(&t).len(), 2);
        // TUPLE2 cannot reach below an open MARK.
        assert!(reason(Pickle::new().int(1).mark().int(2).op(b"\x86")).contains("TUPLE2"));
    }

    #[test]
    fn lists_and_dicts() {
        let l = Pickle::new().op(b"]").int(1).op(b"a").mark().int(2).int(3);
        assert_eq!(list_len(&l.op(b"e").finish()), 3);
        assert_eq!(list_len(&Pickle::new().mark().int(1).op(b"l").finish()), 1);
        let d = Pickle::new().op(b"}").str("a").int(1).op(b"s");
        let d = d.mark().str("b").int(2).str("c").int(3).op(b"u").finish();
        assert_eq!(int_of(&d.dict_get("c").unwrap()), 3);
        // Insertion order is kept.
        let Value::Dict(items) = &d.value else {
            panic!()
        };
        let keys: Vec<_> = items
            .borrow()
            .iter()
            .map(|(k, _)| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        let d = Pickle::new().mark().str("k").int(9).op(b"d").finish();
        assert_eq!(int_of(&d.dict_get("k").unwrap()), 9);
        assert!(reason(Pickle::new().op(b"}").mark().int(1).op(b"u")).contains("odd"));
        assert!(reason(Pickle::new().int(1).int(2).op(b"a")).contains("not a list"));
        assert!(reason(Pickle::new().int(1).int(2).int(3).op(b"s")).contains("not a dict"));
    }

    #[test]
    fn globals_reduce_build_and_persistent_ids() {
        let r = Pickle::new()
            .global("torch._utils", "_rebuild_tensor_v2")
            .op(b")R")
            .finish();
        assert_eq!(
            r.describe(),
            "an object built by torch._utils._rebuild_tensor_v2"
        );
        let n = Pickle::new().global("torch", "Size").op(b")\x81").finish();
        assert!(matches!(n.value, Value::Reduce { .. }));
        // OrderedDict() is a dict; BUILD merges a dict state into it.
        let d = Pickle::new().global("collections", "OrderedDict").op(b")R");
        let d = d.op(b"}").str("_metadata").int(1).op(b"sb").finish();
        assert_eq!(int_of(&d.dict_get("_metadata").unwrap()), 1);
        let b = Pickle::new()
            .global("torch", "Tensor")
            .op(b")R")
            .op(b"}b")
            .finish();
        assert!(matches!(b.value, Value::Build { .. }));
        let q = Pickle::new().str("storage").op(b"\x85Q").finish();
        assert_eq!(q.describe(), "a persistent reference");
    }

    #[test]
    fn code_running_globals_are_refused_by_name() {
        for (module, name) in [
            ("os", "system"),
            ("posix", "system"),
            ("builtins", "eval"),
            ("builtins", "getattr"),
            ("subprocess", "Popen"),
            ("torch", "load"),
            ("collections", "namedtuple"),
        ] {
            let r = reason(Pickle::new().global(module, name));
            assert!(r.contains(&format!("'{module}.{name}'")), "{r}");
            assert!(r.contains("run code"), "{r}");
        }
        assert!(reason(Pickle::new().op(b"cos")).contains("newline"));
    }

    #[test]
    fn memo_shares_instead_of_copying() {
        let p = Pickle::new().op(b"]").int(1).op(b"a").op(b"q\x00");
        let root = p.op(b"h\x00j\x00\x00\x00\x00\x86").finish();
        let items = tuple_of(&root);
        assert!(Rc::ptr_eq(&items[0], &items[1]));
        let p = Pickle::new()
            .op(b"N")
            .op(b"r\x05\x00\x01\x00")
            .op(b"j\x05\x00\x01\x00\x86");
        assert_eq!(tuple_of(&p.finish()).len(), 2);
        assert!(reason(Pickle::new().op(b"h\x03")).contains("memo entry 3"));
    }

    /// The "billion laughs" of pickle: each level is a list holding the previous level twice, so
    /// 64 levels describe 2^64 leaves; shared, they cost 64 lists.
    #[test]
    fn memo_bomb_stays_small() {
        let mut p = Pickle::new().op(b"Nq\x00");
        for level in 1..=64u8 {
            p = p
                .op(b"]")
                .mark()
                .op(&[b'h', level - 1, b'h', level - 1, b'e', b'q', level]);
        }
        let limits = Limits {
            max_objects: 200,
            max_depth: 100,
        };
        let root = p.run_with(limits).unwrap();
        assert_eq!(list_len(&root), 2);
    }

    #[test]
    fn object_count_is_limited() {
        let limits = Limits {
            max_objects: 10,
            max_depth: 100,
        };
        let p = (0..10)
            .fold(Pickle::new().mark(), |p, _| p.op(b"N"))
            .op(b"t");
        let err = p.run_with(limits).unwrap_err();
        assert!(err.reason.contains("more than 10 objects"), "{err}");
        // References to one object do not count as new objects.
        let p = (0..50).fold(Pickle::new().op(b"Nq\x00").mark(), |p, _| p.op(b"h\x00"));
        assert!(p.op(b"l").run_with(limits).is_ok());
    }

    #[test]
    fn nesting_depth_is_limited_without_recursion() {
        // 100k nested tuples: a recursive reader (or a recursive drop) overflows the stack.
        let deep = Pickle::new().op(b"N").op(&vec![0x85; 100_000]);
        let err = deep.run().unwrap_err();
        assert!(err.reason.contains("nested more than 256 deep"), "{err}");
        assert_eq!(err.offset, 2 + 1 + 256 - 1);
        // Depth through lists filled by APPEND counts the same.
        let limits = Limits {
            max_objects: 1000,
            max_depth: 3,
        };
        let lists = Pickle::new().op(b"]]]").op(b"N").op(b"aaa");
        assert!(lists
            .run_with(limits)
            .unwrap_err()
            .reason
            .contains("nested more than 3"));
        let ok = Pickle::new().op(b"]]").op(b"N").op(b"aa");
        assert!(ok.run_with(limits).is_ok());
    }

    #[test]
    fn held_containers_cannot_change_and_cycles_are_impossible() {
        // A list put inside itself.
        let r = reason(Pickle::new().op(b"]q\x00h\x00a"));
        assert!(r.contains("inside itself"), "{r}");
        // A list changed after a tuple took it (how a cycle through two objects starts).
        let r = reason(Pickle::new().op(b"]q\x00\x85h\x00Na"));
        assert!(r.contains("already holds"), "{r}");
        let r = reason(Pickle::new().op(b"}q\x00\x85h\x00NNs"));
        assert!(r.contains("already holds"), "{r}");
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        let r = reason(Pickle::new().op(b"X\xff\xff\xff\xff"));
        assert!(r.contains("4294967295 more bytes needed, 1 left"), "{r}");
        let r = reason(Pickle::new().op(b"\x8a\xff\x01"));
        assert!(r.contains("ends early"), "{r}");
    }

    #[test]
    fn stack_misuse_and_unknown_opcodes() {
        assert!(reason(Pickle::new()).contains("pops more objects"));
        assert!(reason(Pickle::new().int(1).op(b"a")).contains("no object to add to"));
        assert!(reason(Pickle::new().op(b"t")).contains("MARK"));
        assert!(reason(Pickle::new().int(1).mark().op(b"Q")).contains("pops more"));
        let err = Pickle::new().op(b"\x95").run().unwrap_err();
        assert_eq!(err.offset, 2);
        assert!(
            err.reason.contains("0x95") && err.reason.contains("protocol 2"),
            "{err}"
        );
        assert!(unpickle(b"\x80\x02N", Limits::CHECKPOINT)
            .unwrap_err()
            .reason
            .contains("ends early"));
    }
}
