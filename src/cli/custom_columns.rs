//! `reaper get -o custom-columns=NAME:.metadata.name,PHASE:.status.phase`: a table whose
//! columns are JSONPath expressions over each record, as kubectl prints it.

use serde_json::Value;

use super::jsonpath::{join, Path, TemplateError};

/// Parsed columns: a header and a path each.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    columns: Vec<(String, Path)>,
}

impl Columns {
    /// `spec` is what follows `custom-columns=`; `column` is where it starts in what the user
    /// typed (0-based), so that errors point into the whole argument.
    pub fn parse(spec: &str, column: usize) -> Result<Columns, TemplateError> {
        let mut columns = Vec::new();
        let mut at = column;
        for part in spec.split(',') {
            let width = part.chars().count();
            let Some((header, path)) = part.split_once(':') else {
                return Err(TemplateError {
                    column: at + 1,
                    message: format!("column {part:?} has no ':'; expected HEADER:.path"),
                });
            };
            if header.trim().is_empty() {
                return Err(TemplateError {
                    column: at + 1,
                    message: format!("column {part:?} has no header; expected HEADER:.path"),
                });
            }
            let path_at = at + header.chars().count() + 1;
            // kubectl accepts `{.a.b}` here too.
            let (path, path_at) = match path.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) => (inner, path_at + 1),
                None => (path, path_at),
            };
            columns.push((header.to_string(), Path::parse(path, path_at)?));
            at += width + 1;
        }
        Ok(Columns { columns })
    }

    /// The header line, then one row per item; a column with no value shows `<none>`.
    pub fn rows(&self, items: &[Value]) -> (Vec<&str>, Vec<Vec<String>>) {
        let header = self.columns.iter().map(|(h, _)| h.as_str()).collect();
        let rows = items
            .iter()
            .map(|item| {
                self.columns
                    .iter()
                    .map(|(_, p)| match join(&p.eval(item, item), ",") {
                        s if s.is_empty() => "<none>".to_string(),
                        s => s,
                    })
                    .collect()
            })
            .collect();
        (header, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_column_is_a_path_over_each_item() {
        let c = Columns::parse(
            "NAME:.metadata.name,PHASE:status.phase,L:{.metadata.labels.*}",
            0,
        )
        .expect("parses");
        let items = [
            json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "status": {"phase": "Active"}}),
            json!({"metadata": {"name": "b"}}),
        ];
        let (header, rows) = c.rows(&items);
        assert_eq!(header, ["NAME", "PHASE", "L"]);
        assert_eq!(rows, [["a", "Active", "1,2"], ["b", "<none>", "<none>"]]);
    }

    #[test]
    fn bad_columns_say_where() {
        // As typed: `-o custom-columns=NAME:.metadata.name,PHASE` (spec at column 15, 0-based).
        let e = Columns::parse("NAME:.metadata.name,PHASE", 15).expect_err("refused");
        assert_eq!(e.column, 36);
        assert!(e.message.contains("no ':'"), "{e}");
        let e = Columns::parse("A:.a,B:.b[x]", 0).expect_err("refused");
        assert_eq!(e.column, 11, "{e}");
        let e = Columns::parse(":.a", 0).expect_err("refused");
        assert!(e.message.contains("no header"), "{e}");
        let e = Columns::parse("A:", 0).expect_err("refused");
        assert_eq!(e.column, 3, "{e}");
    }
}
