//! kubectl's JSONPath subset, for `reaper get -o jsonpath=…` and `-o custom-columns=…`: one
//! parser and one evaluator over `serde_json::Value`, pure, with errors that say where.
//!
//! Supported: literal text; `{.a.b}` and `{$.a}` / `{@.a}`; `[N]` (negative counts from the
//! end), `[*]`, `['key']` / `["key"]` (keys with dots, such as label keys); `{"\n"}` string
//! literals; `{range PATH}…{end}`. A missing key prints nothing, as kubectl does by default.

use serde_json::Value;
use std::fmt;

/// A parse error: the 1-based column (in characters) of the template where it was found, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.message)
    }
}

/// A step from a node to its children.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(i64),
    All,
}

/// `.a[0]['b']`: from the current node (or, with `$`, the whole document).
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    from_root: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Value(Path),
    Range(Path, Vec<Node>),
}

/// A parsed `-o jsonpath=` template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

/// Characters with their byte offsets, and the column (1-based, in characters) of each.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    /// Added to every column reported: where `text` starts in what the user typed.
    column_base: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str, column_base: usize) -> Self {
        Cursor {
            text,
            pos: 0,
            column_base,
        }
    }
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn eat(&mut self, c: char) -> bool {
        let ate = self.peek() == Some(c);
        if ate {
            self.pos += c.len_utf8();
        }
        ate
    }
    fn column_at(&self, pos: usize) -> usize {
        self.column_base + self.text[..pos].chars().count() + 1
    }
    fn error_at(&self, pos: usize, message: impl Into<String>) -> TemplateError {
        TemplateError {
            column: self.column_at(pos),
            message: message.into(),
        }
    }
    fn error(&self, message: impl Into<String>) -> TemplateError {
        self.error_at(self.pos, message)
    }
}

impl Template {
    /// `column` is where `text` starts in what the user typed (0-based), for errors.
    pub fn parse(text: &str, column: usize) -> Result<Template, TemplateError> {
        let mut cur = Cursor::new(text, column);
        // Open `range`s: the column of each, and the nodes before it.
        let mut stack: Vec<(usize, Path, Vec<Node>)> = Vec::new();
        let mut nodes = Vec::new();
        let mut literal = String::new();
        while let Some(c) = cur.peek() {
            if c != '{' {
                literal.push(c);
                cur.bump();
                continue;
            }
            if !literal.is_empty() {
                nodes.push(Node::Text(std::mem::take(&mut literal)));
            }
            let open = cur.pos;
            cur.bump();
            let Some(len) = cur.text[cur.pos..].find('}') else {
                return Err(cur.error_at(open, "'{' is never closed by '}'"));
            };
            let inner_start = cur.pos;
            let inner = &cur.text[inner_start..inner_start + len];
            let base = cur.column_at(inner_start) - 1;
            cur.pos = inner_start + len + 1;
            let trimmed = inner.trim();
            let lead = inner.len() - inner.trim_start().len();
            let base = base + inner[..lead].chars().count();
            if trimmed.is_empty() {
                return Err(cur.error_at(
                    open,
                    "'{}' is empty; put a path such as .metadata.name in it",
                ));
            }
            if trimmed == "end" {
                let Some((_, path, before)) = stack.pop() else {
                    return Err(cur.error_at(open, "{end} without a {range …} before it"));
                };
                let body = std::mem::replace(&mut nodes, before);
                nodes.push(Node::Range(path, body));
            } else if let Some(rest) = trimmed.strip_prefix("range ") {
                let skip = trimmed.len() - rest.trim_start().len();
                let path = parse_path(rest.trim(), base + skip)?;
                stack.push((open, path, std::mem::take(&mut nodes)));
            } else if trimmed.starts_with('"') || trimmed.starts_with('\'') {
                nodes.push(Node::Text(parse_string(trimmed, base)?));
            } else {
                nodes.push(Node::Value(parse_path(trimmed, base)?));
            }
        }
        if let Some((open, _, _)) = stack.pop() {
            return Err(cur.error_at(open, "{range …} is never closed by {end}"));
        }
        if !literal.is_empty() {
            nodes.push(Node::Text(literal));
        }
        Ok(Template { nodes })
    }

    /// The template applied to `doc`.
    pub fn render(&self, doc: &Value) -> String {
        let mut out = String::new();
        render(&self.nodes, doc, doc, &mut out);
        out
    }
}

fn render(nodes: &[Node], current: &Value, doc: &Value, out: &mut String) {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Value(p) => out.push_str(&join(&p.eval(current, doc), " ")),
            Node::Range(p, body) => {
                for item in p.eval(current, doc).into_iter().flat_map(elements) {
                    render(body, item, doc, out);
                }
            }
        }
    }
}

/// What `range` walks: the elements of an array, or the value itself.
fn elements(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

/// Values as kubectl prints them: strings bare, anything else as compact JSON.
pub fn join(values: &[&Value], sep: &str) -> String {
    values
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(sep)
}

impl Path {
    /// Parses a path (`.a.b`, `$.a`, `@.a[0]`, `a.b` as custom-columns writes it); `column` is
    /// where `text` starts in what the user typed (0-based), for errors.
    pub fn parse(text: &str, column: usize) -> Result<Path, TemplateError> {
        parse_path(text, column)
    }

    /// Every node the path reaches from `current` (`$` paths from `doc`); none when a key is
    /// missing or a step does not fit the value.
    pub fn eval<'a>(&self, current: &'a Value, doc: &'a Value) -> Vec<&'a Value> {
        let start = if self.from_root { doc } else { current };
        let mut nodes = vec![start];
        for step in &self.steps {
            nodes = nodes
                .into_iter()
                .flat_map(|v| -> Vec<&'a Value> {
                    match (step, v) {
                        (Step::Key(k), Value::Object(m)) => m.get(k).into_iter().collect(),
                        (Step::Index(i), Value::Array(a)) => {
                            let i = if *i < 0 { a.len() as i64 + i } else { *i };
                            usize::try_from(i)
                                .ok()
                                .and_then(|i| a.get(i))
                                .into_iter()
                                .collect()
                        }
                        (Step::All, Value::Array(a)) => a.iter().collect(),
                        (Step::All, Value::Object(m)) => m.values().collect(),
                        _ => Vec::new(),
                    }
                })
                .collect();
        }
        nodes
    }
}

fn parse_path(text: &str, column: usize) -> Result<Path, TemplateError> {
    let mut cur = Cursor::new(text, column);
    let mut from_root = false;
    match cur.peek() {
        Some('$') => {
            from_root = true;
            cur.bump();
        }
        Some('@') => {
            cur.bump();
        }
        Some('.' | '[') => {}
        Some(c) if is_key_char(c) => {
            // `metadata.name`, as custom-columns accepts it.
            return parse_steps(cur, false, true);
        }
        Some(c) => {
            return Err(cur.error(format!(
                "unexpected {c:?}; a path starts with '.', '[', '$' or '@' (e.g. .metadata.name)"
            )))
        }
        None => return Err(cur.error("a path is empty; expected e.g. .metadata.name")),
    }
    parse_steps(cur, from_root, false)
}

fn is_key_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '/')
}

fn parse_steps(mut cur: Cursor, from_root: bool, bare_key: bool) -> Result<Path, TemplateError> {
    let mut steps = Vec::new();
    if bare_key {
        steps.push(Step::Key(parse_key(&mut cur)?));
    }
    while let Some(c) = cur.peek() {
        match c {
            '.' => {
                let dot = cur.pos;
                cur.bump();
                match cur.peek() {
                    // `{.}` is the current node itself.
                    None if steps.is_empty() => {}
                    Some('.') => {
                        return Err(cur.error_at(dot, "recursive descent '..' is not supported"))
                    }
                    Some('*') => {
                        cur.bump();
                        steps.push(Step::All);
                    }
                    Some('[') => {}
                    _ => steps.push(Step::Key(parse_key(&mut cur)?)),
                }
            }
            '[' => steps.push(parse_bracket(&mut cur)?),
            c => {
                return Err(cur.error(format!(
                    "unexpected {c:?} after a path; expected '.', '[' or the end of the path"
                )))
            }
        }
    }
    Ok(Path { from_root, steps })
}

fn parse_key(cur: &mut Cursor) -> Result<String, TemplateError> {
    let start = cur.pos;
    while cur.peek().is_some_and(is_key_char) {
        cur.bump();
    }
    if cur.pos == start {
        return Err(match cur.peek() {
            Some(c) => cur.error(format!("unexpected {c:?}; expected a key name after '.'")),
            None => cur.error("a path ends with '.'; expected a key name after it"),
        });
    }
    Ok(cur.text[start..cur.pos].to_string())
}

/// `[N]`, `[-N]`, `[*]`, `['key']`, `["key"]`.
fn parse_bracket(cur: &mut Cursor) -> Result<Step, TemplateError> {
    let open = cur.pos;
    cur.bump();
    let step = match cur.peek() {
        Some('*') => {
            cur.bump();
            Step::All
        }
        Some(q @ ('\'' | '"')) => {
            cur.bump();
            let start = cur.pos;
            while cur.peek().is_some_and(|c| c != q) {
                cur.bump();
            }
            let key = cur.text[start..cur.pos].to_string();
            if !cur.eat(q) {
                return Err(cur.error_at(open, format!("the quoted key is never closed by {q}")));
            }
            Step::Key(key)
        }
        Some('?') => return Err(cur.error("filters [?(…)] are not supported")),
        _ => {
            let start = cur.pos;
            while cur.peek().is_some_and(|c| c == '-' || c.is_ascii_digit()) {
                cur.bump();
            }
            let digits = &cur.text[start..cur.pos];
            if cur.peek() == Some(':') {
                return Err(cur.error("slices [a:b] are not supported; use [N] or [*]"));
            }
            match digits.parse::<i64>() {
                Ok(i) => Step::Index(i),
                Err(_) => {
                    return Err(cur.error_at(
                        start,
                        "expected an index (0, -1), '*' or a quoted key inside '[…]'",
                    ))
                }
            }
        }
    };
    if !cur.eat(']') {
        return Err(cur.error("expected ']'"));
    }
    Ok(step)
}

/// `"…"` or `'…'` with \n, \t, \r, \\ and the quote escaped.
fn parse_string(text: &str, column: usize) -> Result<String, TemplateError> {
    let mut cur = Cursor::new(text, column);
    let quote = cur.bump().unwrap_or('"');
    let mut out = String::new();
    loop {
        match cur.bump() {
            None => return Err(cur.error_at(0, format!("the string is never closed by {quote}"))),
            Some(c) if c == quote => break,
            Some('\\') => {
                let at = cur.pos;
                match cur.bump() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(c @ ('\\' | '"' | '\'')) => out.push(c),
                    Some(c) => return Err(cur.error_at(at, format!("unknown escape \\{c}"))),
                    None => return Err(cur.error_at(at, "a '\\' ends the string")),
                }
            }
            Some(c) => out.push(c),
        }
    }
    if cur.peek().is_some() {
        return Err(cur.error("unexpected text after the string; one string per '{…}'"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> Value {
        json!({
            "apiVersion": "reaper/v1", "kind": "List",
            "items": [
                {"kind": "Session", "metadata": {"name": "a", "labels": {"team.io/x": "tdd"}},
                 "status": {"phase": "Active", "removed": {"containers": 2}}},
                {"kind": "Session", "metadata": {"name": "b"}, "status": {"phase": "Ended"}}
            ]
        })
    }

    fn render(t: &str, doc: &Value) -> String {
        Template::parse(t, 0).expect("parses").render(doc)
    }

    fn error(t: &str) -> TemplateError {
        Template::parse(t, 0).expect_err("refused")
    }

    #[test]
    fn paths_literals_and_wildcards() {
        let doc = list();
        let one = &doc["items"][0];
        assert_eq!(render("{.metadata.name}", one), "a");
        assert_eq!(render("{.status.phase}", one), "Active");
        assert_eq!(render("name={.metadata.name}!", one), "name=a!");
        assert_eq!(render("{.items[*].metadata.name}", &doc), "a b");
        assert_eq!(render("{.items[-1].metadata.name}", &doc), "b");
        assert_eq!(render("{$.kind}{\"\\n\"}", &doc), "List\n");
        assert_eq!(render("{.status.removed}", one), r#"{"containers":2}"#);
        assert_eq!(render("{.status.removed.containers}", one), "2");
        assert_eq!(render("{.metadata.labels['team.io/x']}", one), "tdd");
        assert_eq!(render("{.metadata.labels[\"team.io/x\"]}", one), "tdd");
        assert_eq!(render("{.metadata.labels.*}", one), "tdd");
        assert_eq!(render("{.}", &json!("x")), "x");
        assert_eq!(render("{ .kind }", &doc), "List");
    }

    #[test]
    fn missing_keys_and_mismatched_steps_print_nothing() {
        let doc = list();
        assert_eq!(render("[{.nope.deeper}]", &doc), "[]");
        assert_eq!(render("[{.kind[0]}]", &doc), "[]");
        assert_eq!(render("[{.items[7]}]", &doc), "[]");
        assert_eq!(render("[{.items[-9]}]", &doc), "[]");
    }

    #[test]
    fn range_walks_each_element() {
        let doc = list();
        assert_eq!(
            render(
                "{range .items[*]}{.metadata.name}\t{.status.phase}{\"\\n\"}{end}",
                &doc
            ),
            "a\tActive\nb\tEnded\n"
        );
        // A range over an array value walks its elements; `$` still reaches the document.
        assert_eq!(
            render("{range .items}{.metadata.name}/{$.kind} {end}", &doc),
            "a/List b/List "
        );
        assert_eq!(
            render(
                "{range .items[*]}[{range .metadata.labels.*}{.}{end}]{end}",
                &doc
            ),
            "[tdd][]"
        );
    }

    #[test]
    fn bad_templates_say_where_and_why() {
        let e = error("x {.metadata.name");
        assert_eq!(e.column, 3);
        assert!(e.message.contains("never closed"), "{e}");
        let e = error("{.items[*}");
        assert_eq!(e.column, 10, "{e}");
        assert!(e.message.contains("']'"), "{e}");
        let e = error("{range .items[*]}{.a}");
        assert_eq!((e.column, e.message.contains("{end}")), (1, true), "{e}");
        let e = error("ab{end}");
        assert_eq!(e.column, 3, "{e}");
        let e = error("{}");
        assert!(e.message.contains("empty"), "{e}");
        let e = error("{..name}");
        assert!(e.message.contains("recursive"), "{e}");
        let e = error("{.items[?(@.x)]}");
        assert_eq!(e.column, 9, "{e}");
        assert!(e.message.contains("filters"), "{e}");
        let e = error("{.a[1:2]}");
        assert!(e.message.contains("slices"), "{e}");
        let e = error("{\"\\q\"}");
        assert_eq!(e.column, 4, "{e}");
        let e = error("{\"abc}");
        assert!(e.message.contains("never closed"), "{e}");
        let e = error("{.metadata.}");
        assert_eq!(e.column, 12, "{e}");
        let e = error("{.a b}");
        assert_eq!(e.column, 4, "{e}");
        assert_eq!(
            error("{.a b}").to_string(),
            "at column 4: unexpected ' ' after a path; expected '.', '[' or the end of the path"
        );
    }

    #[test]
    fn bare_paths_as_custom_columns_write_them() {
        let doc = list();
        let p = Path::parse("metadata.name", 0).expect("parses");
        assert_eq!(join(&p.eval(&doc["items"][1], &doc), ","), "b");
        let e = Path::parse(".metadata..name", 5).expect_err("refused");
        assert_eq!(e.column, 15);
    }
}
