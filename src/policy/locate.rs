//! Find where a JSON pointer's value starts in a document, so checks made
//! after parsing can still report line:column.

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skip a string starting at the current quote; return its raw span.
    fn string(&mut self) -> Option<(usize, usize)> {
        let start = self.i;
        if self.peek()? != b'"' {
            return None;
        }
        self.i += 1;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Some((start, self.i));
                }
                _ => self.i += 1,
            }
        }
        None
    }

    fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                while self.i < self.s.len() {
                    match self.s[self.i] {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                None
            }
            _ => {
                while self.i < self.s.len() && !matches!(self.s[self.i], b',' | b'}' | b']') {
                    self.i += 1;
                }
                Some(())
            }
        }
    }

    fn find(&mut self, segs: &[String]) -> Option<usize> {
        self.ws();
        let Some((first, rest)) = segs.split_first() else {
            return Some(self.i);
        };
        match self.peek()? {
            b'{' => {
                self.i += 1;
                loop {
                    self.ws();
                    if self.peek()? == b'}' {
                        return None;
                    }
                    let (a, b) = self.string()?;
                    let key: String = serde_json::from_slice(&self.s[a..b]).ok()?;
                    self.ws();
                    if self.peek()? != b':' {
                        return None;
                    }
                    self.i += 1;
                    if &key == first {
                        return self.find(rest);
                    }
                    self.skip_value()?;
                    self.ws();
                    if self.peek()? == b',' {
                        self.i += 1;
                    }
                }
            }
            b'[' => {
                let want: usize = first.parse().ok()?;
                self.i += 1;
                let mut idx = 0;
                loop {
                    self.ws();
                    if self.peek()? == b']' {
                        return None;
                    }
                    if idx == want {
                        return self.find(rest);
                    }
                    self.skip_value()?;
                    self.ws();
                    if self.peek()? == b',' {
                        self.i += 1;
                    }
                    idx += 1;
                }
            }
            _ => None,
        }
    }
}

/// 1-based (line, column) of the value at `pointer` (RFC 6901) in `src`.
pub fn locate_pointer(src: &str, pointer: &str) -> Option<(usize, usize)> {
    let segs: Vec<String> = if pointer.is_empty() {
        Vec::new()
    } else {
        pointer
            .strip_prefix('/')?
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect()
    };
    let mut sc = Scanner {
        s: src.as_bytes(),
        i: 0,
    };
    let off = sc.find(&segs)?;
    let before = &src[..off];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, col))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values() {
        let src = "{\n  \"a\": {\"b\": [1, {\"c\": \"x\"}, 3]},\n  \"d/e\": true\n}";
        assert_eq!(locate_pointer(src, ""), Some((1, 1)));
        assert_eq!(locate_pointer(src, "/a"), Some((2, 8)));
        assert_eq!(locate_pointer(src, "/a/b/1/c"), Some((2, 24)));
        assert_eq!(locate_pointer(src, "/a/b/2"), Some((2, 30)));
        assert_eq!(locate_pointer(src, "/d~1e"), Some((3, 10)));
        assert_eq!(locate_pointer(src, "/missing"), None);
        assert_eq!(locate_pointer(src, "/a/b/9"), None);
    }
}
