//! Over 500 lines: the hardened reader (document splitting, prechecks, located errors) is one algorithm; its tests are in `manifest.rs` and `tests/hostile_input.rs`.
//!
//! The hardened YAML reader, shared by manifests and the config file.
//!
//! serde_yaml 0.9 (libyaml underneath) is deprecated upstream and has slow paths that hostile
//! input can reach, so it only ever sees one document at a time, and only after cheap checks:
//! size caps, characters YAML forbids, and a flow-nesting limit (libyaml's cost grows with the
//! square of `[`/`{` depth). Each document is then read twice: first by a walker that rejects
//! duplicate keys at any depth (serde's maps silently keep the last one) and bounds alias
//! expansion, then into the typed value through `serde_path_to_error`, so that every error
//! carries a line, a column and a field path.

use std::collections::HashSet;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};

/// Largest accepted document. Bounds parser memory (libyaml keeps a document's events).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Deepest accepted `[`/`{` nesting. Real manifests nest three levels at most.
pub const MAX_FLOW_DEPTH: usize = 64;

/// libyaml spends time proportional to (flow depth x tokens). Bounding the number of `[`/`{`
/// times the document size bounds that cost even when the nesting check is fooled by quotes.
const FLOW_BUDGET: usize = MAX_FLOW_DEPTH * MAX_DOCUMENT_BYTES;
const LOCATE_SENTINEL: &str = "\u{1}reaper-locate\u{1}";

/// One problem, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ManifestError {
    pub file: String,
    /// 1-based document index within the file; 0 when the problem concerns the whole file or
    /// batch (and for config files, which hold a single document).
    pub document: usize,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Field path such as `spec.cleanup.stopTimeout`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    /// `FILE: document N: line L column C: FIELD: MESSAGE`, leaving out the parts not known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        if self.document > 0 {
            write!(f, "document {}: ", self.document)?;
        }
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l} column {c}: ")?,
            (Some(l), None) => write!(f, "line {l}: ")?,
            _ => {}
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a batch; there is always at least one.
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

/// The caller reads bytes; this turns invalid UTF-8 into an error that names where it is.
pub fn decode_utf8<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, ManifestError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        ManifestError {
            file: file.to_string(),
            document: 0,
            line: Some(line),
            column: Some(column),
            field: None,
            message: format!(
                "invalid UTF-8 at byte {}: manifests must be UTF-8 text",
                e.valid_up_to()
            ),
        }
    })
}

/// A problem inside one document, with absolute line numbers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    pub(crate) fn at(
        at: Option<(usize, usize)>,
        field: Option<String>,
        message: String,
    ) -> Problem {
        Problem {
            line: at.map(|a| a.0),
            column: at.map(|a| a.1),
            field,
            message,
        }
    }

    pub(crate) fn into_error(self, file: &str, document: usize) -> ManifestError {
        ManifestError {
            file: file.to_string(),
            document,
            line: self.line,
            column: self.column,
            field: self.field,
            message: self.message,
        }
    }
}

/// One YAML document of a stream, cut out of it without parsing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Document<'a> {
    /// 1-based, counted the way libyaml counts documents.
    pub number: usize,
    /// 1-based line of `text`'s first line within the stream.
    pub first_line: usize,
    pub text: &'a str,
    /// False when the document holds only `---`, comments and blank lines.
    pub has_content: bool,
}

/// Cuts a stream into documents at `---` and `...` lines. YAML forbids these markers at the
/// start of a line inside any scalar or collection (libyaml either ends the document there or
/// fails), so cutting on them is exact, and lets each document be checked and parsed alone.
pub(crate) fn documents(content: &str) -> Documents<'_> {
    Documents {
        content,
        pos: 0,
        line: 1,
        number: 0,
    }
}

pub(crate) struct Documents<'a> {
    content: &'a str,
    pos: usize,
    line: usize,
    number: usize,
}

impl<'a> Documents<'a> {
    fn emit(&mut self, start: usize, first_line: usize, has_content: bool) -> Document<'a> {
        self.number += 1;
        Document {
            number: self.number,
            first_line,
            text: &self.content[start..self.pos],
            has_content,
        }
    }
}

impl<'a> Iterator for Documents<'a> {
    type Item = Document<'a>;

    fn next(&mut self) -> Option<Document<'a>> {
        let (mut start, mut first_line) = (self.pos, self.line);
        let (mut opened, mut has_content) = (false, false);
        while self.pos < self.content.len() {
            let rest = &self.content[self.pos..];
            let len = rest.find('\n').map_or(rest.len(), |i| i + 1);
            let line = &rest[..len];
            if is_marker(line, "---") {
                if opened || has_content {
                    break;
                }
                // Comments and directives before the first `---` belong to this document.
                opened = true;
                has_content = is_content(&line[3..]);
            } else if is_marker(line, "...") {
                self.pos += len;
                self.line += 1;
                if opened || has_content {
                    return Some(self.emit(start, first_line, has_content));
                }
                (start, first_line) = (self.pos, self.line);
                continue;
            } else if !has_content && is_content(line) {
                has_content = true;
            }
            self.pos += len;
            self.line += 1;
        }
        (opened || has_content).then(|| self.emit(start, first_line, has_content))
    }
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.starts_with(marker)
        && matches!(
            line.as_bytes().get(3),
            None | Some(b' ' | b'\t' | b'\r' | b'\n')
        )
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !(t.is_empty() || t.starts_with('#') || line.starts_with('%'))
}

/// What a document is at its top level.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    Empty,
    Mapping { kind: Option<String>, status: bool },
    Other,
}

/// Everything short of typed deserialisation: size, characters, nesting, YAML syntax,
/// duplicate keys, alias expansion.
pub(crate) fn check_and_walk(doc: &Document<'_>) -> Result<Shape, Problem> {
    if !doc.has_content {
        return Ok(Shape::Empty);
    }
    if doc.text.len() > MAX_DOCUMENT_BYTES {
        return Err(Problem::at(
            Some((doc.first_line, 1)),
            None,
            format!(
                "the document is {} bytes; the limit is 1 MiB ({MAX_DOCUMENT_BYTES} bytes)",
                doc.text.len()
            ),
        ));
    }
    precheck(doc)?;
    // Without aliases a document has fewer nodes than bytes; the slack allows modest reuse.
    let mut budget = doc.text.len() + 1024;
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(
        serde_yaml::Deserializer::from_str(doc.text),
        &mut track,
    );
    match (Walk {
        budget: &mut budget,
        keep: false,
    })
    .deserialize(de)
    {
        Ok(Node::Null) => Ok(Shape::Empty),
        Ok(Node::Map { kind, status }) => Ok(Shape::Mapping { kind, status }),
        Ok(_) => Ok(Shape::Other),
        Err(e) => Err(yaml_problem(doc, &track.path(), &e)),
    }
}

/// Deserialises a document (already walked) into `T`, locating any error.
pub(crate) fn typed<T: DeserializeOwned>(doc: &Document<'_>) -> Result<T, Problem> {
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(doc.text)).map_err(|e| {
        let mut problem = yaml_problem(doc, e.path(), e.inner());
        // Types that validate a string (Name, Duration, RelPath...) fail after reading it, and
        // serde_yaml then reports the enclosing mapping's position; the field's own is better.
        // Unknown and duplicate fields are already reported at the key itself.
        let segs = segments(e.path());
        let at_key = problem.message.starts_with("unknown field")
            || problem.message.starts_with("duplicate field");
        if !segs.is_empty() && !at_key {
            if let Some((line, column)) = locate_path(doc, &segs) {
                (problem.line, problem.column) = (Some(line), Some(column));
            }
        }
        problem
    })
}

/// One step of a path into a document.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Line and column of the value at `keys`, or of the whole document for `[]`.
pub(crate) fn locate(doc: &Document<'_>, keys: &[&str]) -> Option<(usize, usize)> {
    let path: Vec<Seg<'_>> = keys.iter().map(|k| Seg::Key(k)).collect();
    locate_path(doc, &path)
}

/// Places errors found after deserialisation. It reads the document again and fails on purpose
/// at the value, which is what makes serde_yaml report that value's position.
pub(crate) fn locate_path(doc: &Document<'_>, path: &[Seg<'_>]) -> Option<(usize, usize)> {
    match (Locate { path }).deserialize(serde_yaml::Deserializer::from_str(doc.text)) {
        Err(e) if e.to_string().contains(LOCATE_SENTINEL) => e
            .location()
            .map(|l| (l.line() + doc.first_line - 1, l.column())),
        _ => None,
    }
}

/// The known part of a serde path: it stops where serde could not tell (syntax errors).
fn segments(path: &serde_path_to_error::Path) -> Vec<Seg<'_>> {
    use serde_path_to_error::Segment;
    path.iter()
        .map_while(|s| match s {
            Segment::Map { key } => Some(Seg::Key(key.as_str())),
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// `spec.paths[1]`, or None at the top level.
fn field_of(path: &serde_path_to_error::Path) -> Option<String> {
    let mut out = String::new();
    for seg in segments(path) {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Turns a serde_yaml error into a Problem: location made absolute, and the location and
/// field path that serde_yaml writes into its message removed (the Problem carries them).
fn yaml_problem(
    doc: &Document<'_>,
    path: &serde_path_to_error::Path,
    err: &serde_yaml::Error,
) -> Problem {
    let field = field_of(path);
    let offset = doc.first_line - 1;
    let loc = err.location().map(|l| (l.line(), l.column()));
    let mut message = err.to_string();
    if let Some((l, c)) = loc {
        let tail = format!(" at line {l} column {c}");
        if let Some(i) = message.find(&tail) {
            message.replace_range(i..i + tail.len(), "");
        }
    }
    if let Some(f) = &field {
        let cuts = f
            .char_indices()
            .filter(|(_, c)| *c == '.' || *c == '[')
            .map(|(i, _)| i);
        let mut prefixes: Vec<&str> = cuts.map(|i| &f[..i]).collect();
        prefixes.push(f);
        if let Some(rest) = prefixes
            .iter()
            .rev()
            .find_map(|p| message.strip_prefix(p).and_then(|r| r.strip_prefix(": ")))
        {
            message = rest.to_string();
        }
    }
    message = message
        .replace(
            "recursion limit exceeded",
            "nested more than 128 levels deep",
        )
        .replace(
            "repetition limit exceeded",
            "aliases expand to too much data (an alias bomb?)",
        );
    Problem {
        line: loc.map(|(l, _)| l + offset),
        column: loc.map(|(_, c)| c),
        field,
        message: shift_lines(&message, offset),
    }
}

/// libyaml messages can name a second position ("while parsing a mapping at line 2 column 1");
/// it is relative to the document and must become relative to the file.
fn shift_lines(message: &str, offset: usize) -> String {
    const PAT: &str = " at line ";
    if offset == 0 {
        return message.to_string();
    }
    let mut out = String::with_capacity(message.len() + 4);
    let mut rest = message;
    while let Some(i) = rest.find(PAT) {
        out.push_str(&rest[..i + PAT.len()]);
        rest = &rest[i + PAT.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) if rest[digits..].starts_with(" column ") => {
                out.push_str(&(n + offset).to_string())
            }
            _ => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Characters libyaml accepts in a stream.
fn yaml_char_allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// A linear scan that rejects what would make libyaml slow or our line numbers wrong: forbidden
/// characters, line breaks other than LF and CRLF, and deep `[`/`{` nesting. It tracks quotes
/// and comments to find real nesting; the bracket budget bounds the cost when it is fooled.
fn precheck(doc: &Document<'_>) -> Result<(), Problem> {
    #[derive(PartialEq)]
    enum State {
        Normal,
        Comment,
        Single,
        Double { escape: bool },
    }
    let bytes = doc.text.as_bytes();
    let (mut line, mut column) = (doc.first_line, 0usize);
    let (mut depth, mut brackets) = (0usize, 0usize);
    let mut state = State::Normal;
    let mut prev = '\n';
    for (i, c) in doc.text.char_indices() {
        column += 1;
        let here = Some((line, column));
        if !yaml_char_allowed(c) {
            return Err(Problem::at(
                here,
                None,
                format!("character U+{:04X} is not allowed in YAML text; use an escape in a double-quoted string", c as u32),
            ));
        }
        if (c == '\r' && bytes.get(i + 1) != Some(&b'\n'))
            || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}')
        {
            return Err(Problem::at(
                here,
                None,
                format!(
                    "line break U+{:04X} is not allowed; use LF or CRLF line endings",
                    c as u32
                ),
            ));
        }
        state = match state {
            State::Comment if c == '\n' => State::Normal,
            State::Comment => State::Comment,
            State::Single if c == '\'' => State::Normal,
            State::Single => State::Single,
            State::Double { escape: true } => State::Double { escape: false },
            State::Double { escape: false } if c == '\\' => State::Double { escape: true },
            State::Double { escape: false } if c == '"' => State::Normal,
            State::Double { escape: false } => State::Double { escape: false },
            State::Normal => {
                let token_start = prev.is_whitespace()
                    || matches!(prev, '[' | '{' | ',' | '\u{feff}')
                    || (depth > 0 && prev == ':');
                match c {
                    '#' if prev.is_whitespace() || prev == '\u{feff}' => State::Comment,
                    '"' if token_start => State::Double { escape: false },
                    '\'' if token_start => State::Single,
                    '[' | '{' => {
                        depth += 1;
                        if depth > MAX_FLOW_DEPTH {
                            return Err(Problem::at(
                                here,
                                None,
                                format!("flow collections ([...] or {{...}}) are nested more than {MAX_FLOW_DEPTH} levels deep"),
                            ));
                        }
                        State::Normal
                    }
                    ']' | '}' => {
                        depth = depth.saturating_sub(1);
                        State::Normal
                    }
                    _ => State::Normal,
                }
            }
        };
        if c == '[' || c == '{' {
            brackets += 1;
            if brackets.saturating_mul(doc.text.len()) > FLOW_BUDGET {
                return Err(Problem::at(
                    here,
                    None,
                    format!(
                        "too many '[' and '{{' ({brackets}) for a document of {} bytes: it cannot be parsed safely",
                        doc.text.len()
                    ),
                ));
            }
        }
        if c == '\n' {
            line += 1;
            column = 0;
        }
        prev = c;
    }
    Ok(())
}

/// What the walker saw at one node.
enum Node {
    Null,
    Str(String),
    Map { kind: Option<String>, status: bool },
    Other,
}

/// Visits every node once (aliases included, as serde_yaml replays them), rejecting duplicate
/// keys at any depth and stopping when aliases expand past the budget.
struct Walk<'b> {
    budget: &'b mut usize,
    /// Keep a string value (only `kind`'s is needed) rather than allocate for every scalar.
    keep: bool,
}

impl Walk<'_> {
    fn tick<E: de::Error>(&mut self) -> Result<(), E> {
        match self.budget.checked_sub(1) {
            Some(left) => {
                *self.budget = left;
                Ok(())
            }
            None => Err(E::custom(
                "aliases expand this document far beyond its size (an alias bomb?)",
            )),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Node;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(mut self, _: bool) -> Result<Node, E> {
        self.tick()?;
        Ok(Node::Other)
    }
    fn visit_i64<E: de::Error>(mut self, _: i64) -> Result<Node, E> {
        self.tick()?;
        Ok(Node::Other)
    }
    fn visit_u64<E: de::Error>(mut self, _: u64) -> Result<Node, E> {
        self.tick()?;
        Ok(Node::Other)
    }
    fn visit_i128<E: de::Error>(mut self, _: i128) -> Result<Node, E> {
        self.tick()?;
        Ok(Node::Other)
    }
    fn visit_u128<E: de::Error>(mut self, _: u128) -> Result<Node, E> {
        self.tick()?;
        Ok(Node::Other)
    }
    fn visit_f64<E: de::Error>(mut self, _: f64) -> Result<Node, E> {
        self.tick()?;
        Ok(Node::Other)
    }
    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<Node, E> {
        self.tick()?;
        Ok(if self.keep {
            Node::Str(v.to_string())
        } else {
            Node::Other
        })
    }
    fn visit_unit<E: de::Error>(mut self) -> Result<Node, E> {
        self.tick()?;
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(mut self) -> Result<Node, E> {
        self.tick()?;
        Ok(Node::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Node, A::Error> {
        self.tick()?;
        while seq
            .next_element_seed(Walk {
                budget: &mut *self.budget,
                keep: false,
            })?
            .is_some()
        {}
        Ok(Node::Other)
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Node, A::Error> {
        self.tick()?;
        let mut seen = HashSet::new();
        let (mut kind, mut status) = (None, false);
        while let Some(key) = map.next_key_seed(Key { seen: &mut seen })? {
            let value = map.next_value_seed(Walk {
                budget: &mut *self.budget,
                keep: key == "kind",
            })?;
            match (key.as_str(), value) {
                ("kind", Node::Str(s)) => kind = Some(s),
                ("status", _) => status = true,
                _ => {}
            }
        }
        Ok(Node::Map { kind, status })
    }
    fn visit_enum<A: de::EnumAccess<'de>>(mut self, data: A) -> Result<Node, A::Error> {
        // serde_yaml presents `!tag value` as an enum; walk the value.
        self.tick()?;
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant_seed(
            variant,
            Walk {
                budget: &mut *self.budget,
                keep: false,
            },
        )?;
        Ok(Node::Other)
    }
}

/// A map key, read as the string serde will see (so `1` and `"1"` collide, as they do in a
/// `BTreeMap<String, _>`), rejected if it repeats. Failing here, inside the key's own
/// deserialisation, makes serde_yaml report the duplicate key's position.
struct Key<'s> {
    seen: &'s mut HashSet<String>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if !self.seen.insert(v.to_string()) {
            return Err(E::custom(format!("duplicate key {v:?}")));
        }
        Ok(v.to_string())
    }
}

/// Navigates map keys to a value and fails there on purpose (see `locate`).
struct Locate<'p> {
    path: &'p [Seg<'p>],
}

impl Locate<'_> {
    fn here<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(LOCATE_SENTINEL))
        } else {
            Ok(())
        }
    }
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.here()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.here()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.here()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.here()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.here()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // serde_yaml presents `!tag value` as an enum. Its value must be read (here: walked
        // into), or its events stay queued and serde_yaml panics on the next ones (found by
        // fuzzing: `metadata: !t` above an invalid name).
        self.here()?;
        let (IgnoredAny, variant) = data.variant::<IgnoredAny>()?;
        de::VariantAccess::newtype_variant_seed(variant, self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(LOCATE_SENTINEL));
        };
        let Seg::Index(wanted) = *first else {
            return Ok(());
        };
        for _ in 0..wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Locate { path: rest }).map(|_| ())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(LOCATE_SENTINEL));
        };
        let Seg::Key(wanted) = *first else {
            return Ok(());
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == wanted {
                return map.next_value_seed(Locate { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifting_lines_only_touches_positions() {
        assert_eq!(
            shift_lines("x at line 2 column 1, y at line 3 column 4", 10),
            "x at line 12 column 1, y at line 13 column 4"
        );
        assert_eq!(shift_lines("key \"at line 2\"", 10), "key \"at line 2\"");
    }
}
