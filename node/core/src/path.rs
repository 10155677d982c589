//! Paths of files and directories (docs/ARCHITECTURE.md §3): validated once, at the edge.

use std::fmt;

/// Longest path accepted, in bytes.
pub const PATH_BYTES_MAX: usize = 1024;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Paths start at the root.
    #[error("path must start with '/'")]
    NotAbsolute,
    /// Over [`PATH_BYTES_MAX`].
    #[error("path is {0} bytes long; the limit is {PATH_BYTES_MAX}")]
    TooLong(usize),
    /// `a//b` or a trailing `/`.
    #[error("path has an empty component")]
    EmptyComponent,
    /// `.` or `..`.
    #[error("path component {0:?} is not allowed")]
    DotComponent(String),
    /// A NUL byte.
    #[error("path contains a NUL byte")]
    Nul,
    /// The root is a directory, never a file.
    #[error("the root '/' is a directory, not a file")]
    Root,
}

/// A valid absolute path: `/` alone (the root) or `/` followed by components separated by
/// single slashes, none empty, `.` or `..`, no NUL, at most [`PATH_BYTES_MAX`] bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShoalPath(String);

impl ShoalPath {
    /// The root directory.
    pub fn root() -> Self {
        Self("/".to_string())
    }

    /// Validates `raw`.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.len() > PATH_BYTES_MAX {
            return Err(PathError::TooLong(raw.len()));
        }
        if raw.contains('\0') {
            return Err(PathError::Nul);
        }
        let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
        if rest.is_empty() {
            return Ok(Self::root());
        }
        for component in rest.split('/') {
            match component {
                "" => return Err(PathError::EmptyComponent),
                "." | ".." => return Err(PathError::DotComponent(component.to_string())),
                _ => {}
            }
        }
        Ok(Self(raw.to_string()))
    }

    /// Validates a path that must name a file (anything but the root).
    pub fn parse_file(raw: &str) -> Result<Self, PathError> {
        let path = Self::parse(raw)?;
        if path.is_root() {
            return Err(PathError::Root);
        }
        Ok(path)
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent directory and this path's last component; `None` for the root.
    pub fn split_parent(&self) -> Option<(ShoalPath, &str)> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/').unwrap_or(0);
        let parent = if cut == 0 { Self::root() } else { Self(self.0[..cut].to_string()) };
        Some((parent, &self.0[cut + 1..]))
    }

    /// The child `name` of this directory. `name` must be one valid component.
    pub fn join(&self, name: &str) -> ShoalPath {
        debug_assert!(!name.is_empty() && !name.contains('/'));
        if self.is_root() { Self(format!("/{name}")) } else { Self(format!("{}/{name}", self.0)) }
    }

    /// Every (directory, child name) pair from the root down to this path:
    /// `/a/b` gives `[("/", "a"), ("/a", "b")]`.
    pub fn lineage(&self) -> Vec<(ShoalPath, String)> {
        let mut pairs = Vec::new();
        let mut current = self.clone();
        while let Some((parent, name)) = current.split_parent() {
            let name = name.to_string();
            pairs.push((parent.clone(), name));
            current = parent;
        }
        pairs.reverse();
        pairs
    }
}

impl fmt::Display for ShoalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ShoalPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn valid_paths_are_accepted() {
        for raw in ["/", "/a", "/photos/2024/beach.jpg", "/with space/ünïcödé", "/.hidden", "/a..b"] {
            assert_eq!(ShoalPath::parse(raw).map(|p| p.to_string()), Ok(raw.to_string()));
        }
    }

    #[test]
    fn invalid_paths_are_refused_with_the_reason() {
        assert_eq!(ShoalPath::parse("a/b"), Err(PathError::NotAbsolute));
        assert_eq!(ShoalPath::parse(""), Err(PathError::NotAbsolute));
        assert_eq!(ShoalPath::parse("/a//b"), Err(PathError::EmptyComponent));
        assert_eq!(ShoalPath::parse("/a/"), Err(PathError::EmptyComponent));
        assert_eq!(ShoalPath::parse("/a/../b"), Err(PathError::DotComponent("..".into())));
        assert_eq!(ShoalPath::parse("/./b"), Err(PathError::DotComponent(".".into())));
        assert_eq!(ShoalPath::parse("/a\0b"), Err(PathError::Nul));
        let long = format!("/{}", "x".repeat(PATH_BYTES_MAX));
        assert_eq!(ShoalPath::parse(&long), Err(PathError::TooLong(PATH_BYTES_MAX + 1)));
        assert_eq!(ShoalPath::parse_file("/"), Err(PathError::Root));
    }

    #[test]
    fn the_longest_allowed_path_is_accepted() {
        let longest = format!("/{}", "x".repeat(PATH_BYTES_MAX - 1));
        assert!(ShoalPath::parse(&longest).is_ok());
    }

    #[test]
    fn lineage_walks_from_the_root_down() {
        let path = ShoalPath::parse("/a/b/c").expect("valid");
        let lineage: Vec<_> = path.lineage().into_iter().map(|(dir, name)| format!("{dir}:{name}")).collect();
        assert_eq!(lineage, ["/:a", "/a:b", "/a/b:c"]);
        assert!(ShoalPath::root().lineage().is_empty());
    }

    proptest! {
        #[test]
        fn a_parsed_path_splits_and_joins_back_to_itself(components in proptest::collection::vec("[a-z.]{1,4}", 1..5)) {
            let raw = format!("/{}", components.join("/"));
            if let Ok(path) = ShoalPath::parse(&raw) {
                let (parent, name) = path.split_parent().expect("not the root");
                prop_assert_eq!(parent.join(name), path.clone());
            }
        }

        #[test]
        fn parsing_never_panics(raw in ".{0,40}") {
            let _ = ShoalPath::parse(&raw);
        }
    }
}
