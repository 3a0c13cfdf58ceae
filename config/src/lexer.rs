//! The lexer of vpnsyncd.conf, in the manner of OpenBSD's parse.y: `#`
//! comments, `\` line continuation, double-quoted strings, `{ } , =`, and
//! words. Newlines are tokens, because statements end at the end of a line.
//!
//! Macros are expanded here: a word `$name` becomes the tokens of the macro's
//! value, and `$name` inside a quoted string is replaced by the value (`\$`
//! is a literal dollar sign).

use std::collections::{HashMap, VecDeque};

use crate::error::Pos;
use crate::file::human;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tok {
    Word(String),
    Str(String),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Newline,
    Eof,
}

impl Tok {
    /// How the token is named in error messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("\"{w}\""),
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::LBrace => "\"{\"".into(),
            Tok::RBrace => "\"}\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::Eq => "\"=\"".into(),
            Tok::Newline => "end of line".into(),
            Tok::Eof => "end of file".into(),
        }
    }
}

/// Macro expansion may nest this deep (a macro whose value names a macro).
const MAX_EXPANSION_DEPTH: usize = 16;
/// A quoted string may be this long once its macros are expanded: each
/// definition can double the one before, so without a limit 40 lines make
/// a terabyte.
pub const MAX_STRING: usize = 64 << 10;
/// What macros may add to one configuration in all, so that its canonical
/// form stays small whatever the nesting.
pub const MAX_EXPANDED: usize = 1 << 20;

pub struct Lexer {
    chars: Vec<char>,
    at: usize,
    line: u32,
    col: u32,
    /// Tokens of an expanded macro, not yet handed out.
    pending: VecDeque<(Tok, Pos)>,
    /// Bytes that macro expansion produced so far.
    expanded: usize,
}

fn tok_len(t: &Tok) -> usize {
    match t {
        Tok::Word(w) | Tok::Str(w) => w.len(),
        _ => 1,
    }
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '{' | '}' | '=' | ',' | '"' | '#')
}

pub fn is_macro_name(s: &str) -> bool {
    let mut it = s.chars();
    matches!(it.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && it.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Lexer {
    pub fn new(text: &str) -> Lexer {
        Lexer { chars: text.chars().collect(), at: 0, line: 1, col: 1, pending: VecDeque::new(), expanded: 0 }
    }

    /// Starts the count of expanded bytes where `outer` is: an included
    /// file shares the budget of the file that includes it.
    pub fn share_budget(&mut self, outer: &Lexer) {
        self.expanded = outer.expanded;
    }

    fn peek_char(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.at).copied()?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn pos(&self) -> Pos {
        Pos { line: self.line, col: self.col }
    }

    /// The next token, macros expanded.
    pub fn next(&mut self, macros: &HashMap<String, String>) -> Result<(Tok, Pos), (Pos, String)> {
        if let Some(t) = self.pending.pop_front() {
            return Ok(t);
        }
        let (tok, pos) = self.raw(macros)?;
        match tok {
            Tok::Word(w) if w.starts_with('$') => {
                self.expand(&w[1..], pos, macros, 0)?;
                match self.pending.pop_front() {
                    Some(t) => Ok(t),
                    // A macro with an empty value stands for nothing.
                    None => self.next(macros),
                }
            }
            t => Ok((t, pos)),
        }
    }

    /// Queues the tokens of macro `name`'s value, all at `pos`.
    fn expand(
        &mut self,
        name: &str,
        pos: Pos,
        macros: &HashMap<String, String>,
        depth: usize,
    ) -> Result<(), (Pos, String)> {
        if depth >= MAX_EXPANSION_DEPTH {
            return Err((pos, format!("macro \"{name}\" expands too deeply (does it name itself?)")));
        }
        let value = macros.get(name).ok_or_else(|| (pos, format!("macro \"{name}\" is not defined")))?;
        let mut sub = Lexer::new(value);
        loop {
            match sub.raw(macros) {
                Ok((Tok::Eof, _)) => return Ok(()),
                Ok((Tok::Word(w), _)) if w.starts_with('$') => self.expand(&w[1..], pos, macros, depth + 1)?,
                Ok((t, _)) => {
                    self.count_expanded(tok_len(&t), pos)?;
                    self.pending.push_back((t, pos));
                }
                Err((_, msg)) => return Err((pos, format!("in macro \"{name}\": {msg}"))),
            }
        }
    }

    /// Counts `n` bytes of expansion at `pos` against [`MAX_EXPANDED`].
    fn count_expanded(&mut self, n: usize, pos: Pos) -> Result<(), (Pos, String)> {
        self.expanded += n;
        if self.expanded > MAX_EXPANDED {
            return Err((pos, format!("macros expand to more than {} in all", human(MAX_EXPANDED as u64))));
        }
        Ok(())
    }

    /// The next token as written.
    fn raw(&mut self, macros: &HashMap<String, String>) -> Result<(Tok, Pos), (Pos, String)> {
        loop {
            match self.peek_char() {
                Some('\\') if self.chars.get(self.at + 1) == Some(&'\n') => {
                    self.bump();
                    self.bump();
                }
                Some('#') => {
                    while !matches!(self.peek_char(), None | Some('\n')) {
                        self.bump();
                    }
                }
                Some(c) if c != '\n' && c.is_whitespace() => {
                    self.bump();
                }
                _ => break,
            }
        }
        let pos = self.pos();
        let Some(c) = self.bump() else {
            return Ok((Tok::Eof, pos));
        };
        let tok = match c {
            '\n' => Tok::Newline,
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            ',' => Tok::Comma,
            '=' => Tok::Eq,
            '"' => Tok::Str(self.string(pos, macros)?),
            c => {
                let mut w = String::from(c);
                while let Some(c) = self.peek_char().filter(|c| is_word_char(*c)) {
                    w.push(c);
                    self.bump();
                }
                Tok::Word(w)
            }
        };
        Ok((tok, pos))
    }

    /// The rest of a quoted string whose opening quote was at `start`.
    fn string(&mut self, start: Pos, macros: &HashMap<String, String>) -> Result<String, (Pos, String)> {
        let mut s = String::new();
        loop {
            let at = self.pos();
            match self.bump() {
                None | Some('\n') => return Err((start, "unterminated quoted string".into())),
                Some('"') => return Ok(s),
                Some('\\') => match self.bump() {
                    None | Some('\n') => return Err((start, "unterminated quoted string".into())),
                    Some(c) => s.push(c),
                },
                Some('$') => {
                    let mut name = String::new();
                    while let Some(c) = self.peek_char().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
                        name.push(c);
                        self.bump();
                    }
                    if name.is_empty() {
                        return Err((at, "\"$\" without a macro name; write \\$ for a dollar sign".into()));
                    }
                    let v = macros.get(&name).ok_or_else(|| (at, format!("macro \"{name}\" is not defined")))?;
                    if s.len() + v.len() > MAX_STRING {
                        return Err((
                            at,
                            format!(
                                "the string passes {} where macro \"{name}\" is expanded",
                                human(MAX_STRING as u64)
                            ),
                        ));
                    }
                    self.count_expanded(v.len(), at)?;
                    s.push_str(v);
                }
                Some(c) => s.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str, macros: &[(&str, &str)]) -> Result<Vec<(Tok, Pos)>, (Pos, String)> {
        let m: HashMap<String, String> = macros.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let mut lx = Lexer::new(text);
        let mut out = Vec::new();
        loop {
            let t = lx.next(&m)?;
            if t.0 == Tok::Eof {
                return Ok(out);
            }
            out.push(t);
        }
    }

    fn toks(text: &str, macros: &[(&str, &str)]) -> Vec<Tok> {
        all(text, macros).unwrap().into_iter().map(|t| t.0).collect()
    }

    fn w(s: &str) -> Tok {
        Tok::Word(s.into())
    }

    #[test]
    fn words_strings_comments_continuations() {
        assert_eq!(
            toks("listen on 1.2.3.4 # here\nca \"/a b\"\\\n x{y,z}", &[]),
            vec![
                w("listen"),
                w("on"),
                w("1.2.3.4"),
                Tok::Newline,
                w("ca"),
                Tok::Str("/a b".into()),
                w("x"),
                Tok::LBrace,
                w("y"),
                Tok::Comma,
                w("z"),
                Tok::RBrace
            ]
        );
    }

    #[test]
    fn positions_are_one_based() {
        let t = all("a\n  b", &[]).unwrap();
        assert_eq!(t[2].1, Pos { line: 2, col: 3 });
    }

    #[test]
    fn macros_expand_in_words_and_strings() {
        assert_eq!(
            toks("listen on $addr", &[("addr", "10.0.0.1 port 7")]),
            vec![w("listen"), w("on"), w("10.0.0.1"), w("port"), w("7")]
        );
        assert_eq!(toks("\"$dir/ca.crt \\$x\"", &[("dir", "/etc")]), vec![Tok::Str("/etc/ca.crt $x".into())]);
        assert_eq!(toks("$a", &[("a", "$b"), ("b", "end")]), vec![w("end")]);
    }

    #[test]
    fn lexical_errors() {
        assert_eq!(all("ca \"/x\n", &[]).unwrap_err(), (Pos { line: 1, col: 4 }, "unterminated quoted string".into()));
        assert_eq!(all("x $nope", &[]).unwrap_err(), (Pos { line: 1, col: 3 }, "macro \"nope\" is not defined".into()));
        assert_eq!(all("\"a $ b\"", &[]).unwrap_err().0, Pos { line: 1, col: 4 });
        assert!(all("$a", &[("a", "$a")]).unwrap_err().1.contains("too deeply"));
    }
}
