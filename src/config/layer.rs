//! Config layers: the flags, the file and the defaults are each a `ConfigFile`, with every key
//! optional. What is generic about a layer (how two merge, which keys there are, how a default
//! reads in `--help`) is derived here from the struct's own field list, so a new key is one field.

use std::path::PathBuf;

use super::{ListenAddr, LogFormat, Secret, Source, StoreBackend};
use crate::core::model::{Duration, Percent, SerialExitsSetting};

/// Declares a struct of config keys exactly as written (its serde and clap attributes pass
/// through) and derives, from the same field list, how layers of it merge and how its keys are
/// listed. A field is a key (`Option<T>`, `T: Leaf`) or a section of keys (`Option<S>`, `S`
/// itself declared with this macro).
macro_rules! config_keys {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $name {
            /// Each key from `self` if set, else from `lower`.
            pub fn or(self, lower: Self) -> Self {
                $name { $( $field: $crate::config::layer::Key::or(self.$field, lower.$field), )* }
            }

            /// Every key below this one, in declaration order.
            pub fn keys(&self) -> Vec<$crate::config::layer::KeyInfo> {
                let mut out = Vec::new();
                self.visit(&mut Vec::new(), &mut out);
                out
            }

            fn visit(
                &self,
                path: &mut Vec<&'static str>,
                out: &mut Vec<$crate::config::layer::KeyInfo>,
            ) {
                $(
                    path.push(stringify!($field));
                    $crate::config::layer::Key::visit(&self.$field, path, out);
                    path.pop();
                )*
            }
        }

        impl $crate::config::layer::Key for Option<$name> {
            fn or(self, lower: Self) -> Self {
                match (self, lower) {
                    (Some(upper), Some(lower)) => Some(upper.or(lower)),
                    (upper, lower) => upper.or(lower),
                }
            }
            fn visit(
                &self,
                path: &mut Vec<&'static str>,
                out: &mut Vec<$crate::config::layer::KeyInfo>,
            ) {
                match self {
                    Some(section) => section.visit(path, out),
                    // An unset section still has its keys.
                    None => $name::default().visit(path, out),
                }
            }
        }
    };
}
pub(crate) use config_keys;

/// A field of a layer: one key, or a section of keys.
pub trait Key: Sized {
    /// `self` where it is set, else `lower`.
    fn or(self, lower: Self) -> Self;
    /// Appends the keys at and below `path` (field names from the top).
    fn visit(&self, path: &mut Vec<&'static str>, out: &mut Vec<KeyInfo>);
}

/// One key of a layer, as `keys()` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyInfo {
    /// The Rust field names from the top, e.g. `["docker", "host"]`; the last one is also the
    /// flag's clap id.
    pub path: Vec<&'static str>,
    /// Whether this layer sets it.
    pub set: bool,
    /// Its value as `--help` shows a default; `None` when unset, for switches and for secrets.
    pub shown: Option<String>,
}

impl KeyInfo {
    /// The key as written in the file, e.g. `docker.host` or `engineQuirks.serialExits`.
    pub fn name(&self) -> String {
        let words: Vec<String> = self.path.iter().map(|f| camel_case(f)).collect();
        words.join(".")
    }

    /// The clap id of its flag (the field's name), if it has one.
    pub fn field(&self) -> &'static str {
        self.path.last().copied().unwrap_or_default()
    }
}

/// `serde(rename_all = "camelCase")`'s rule: `engine_quirks` -> `engineQuirks`.
fn camel_case(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The type of one key's value.
pub trait Leaf {
    /// How `--help` shows it as a default; `None` to show nothing.
    fn shown(&self) -> Option<String>;
}

impl<T: Leaf> Key for Option<T> {
    fn or(self, lower: Self) -> Self {
        self.or(lower)
    }
    fn visit(&self, path: &mut Vec<&'static str>, out: &mut Vec<KeyInfo>) {
        out.push(KeyInfo {
            path: path.clone(),
            set: self.is_some(),
            shown: self.as_ref().and_then(Leaf::shown),
        });
    }
}

/// Where a layer came from merges like a key but is none.
impl Key for Option<Source> {
    fn or(self, lower: Self) -> Self {
        self.or(lower)
    }
    fn visit(&self, _: &mut Vec<&'static str>, _: &mut Vec<KeyInfo>) {}
}

macro_rules! shown_by_display {
    ($($ty:ty),*) => {
        $( impl Leaf for $ty {
            fn shown(&self) -> Option<String> {
                Some(self.to_string())
            }
        } )*
    };
}
shown_by_display!(
    ListenAddr,
    Duration,
    usize,
    LogFormat,
    SerialExitsSetting,
    StoreBackend,
    Percent
);

impl Leaf for String {
    fn shown(&self) -> Option<String> {
        Some(if self.is_empty() {
            "\"\"".into()
        } else {
            self.clone()
        })
    }
}

impl Leaf for PathBuf {
    fn shown(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

/// A repeatable flag: its values, as they would be given; "none" for none.
impl Leaf for Vec<String> {
    fn shown(&self) -> Option<String> {
        Some(match self.is_empty() {
            true => "none".into(),
            false => self.join(", "),
        })
    }
}

/// A switch is off unless given; saying so adds nothing.
impl Leaf for bool {
    fn shown(&self) -> Option<String> {
        None
    }
}

impl Leaf for Secret {
    fn shown(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_as_serde_names_them() {
        assert_eq!(camel_case("engine_quirks"), "engineQuirks");
        assert_eq!(camel_case("dry_run"), "dryRun");
        assert_eq!(camel_case("instance"), "instance");
        let key = KeyInfo {
            path: vec!["engine_quirks", "serial_exits"],
            set: false,
            shown: None,
        };
        assert_eq!(
            (key.name().as_str(), key.field()),
            ("engineQuirks.serialExits", "serial_exits")
        );
    }
}
