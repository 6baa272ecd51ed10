//! Plain rendering of PTY output (`shell read --plain`): the text a person would have
//! seen, line by line, without colours, cursor dances, bracketed-paste markers or window
//! titles. Pure and small, so it is unit- and property-tested here.
//!
//! A hand-written renderer rather than a terminal emulator crate such as `vt100`: an
//! emulator models a fixed `rows × cols` screen, so it wraps long lines at the width,
//! scrolls earlier lines away, and `ESC[2J` or cursor-up rewrite screen cells rather
//! than lines; what comes out of it depends on the window size and on output outside the
//! chunk being read. The contract's rules (peer reference §5.17) are line-oriented and
//! width-free, and apply to exactly the chunk a read returns; they are implemented here
//! as the minimum, with C1 controls dropped as well.
//!
//! The rules: CR returns to column 0; LF commits the line; BS moves left and deletes the
//! character there; TAB and printable characters overwrite at the column or append; other
//! controls vanish. `ESC [ … final` (CSI) is consumed, acting on `K` (erase to end of
//! line, erase the start with 1, the whole line with 2) and `J` 2/3 (clear everything
//! collected). OSC, DCS, APC and PM strings run to BEL or `ESC \`; `ESC O x` is three
//! characters, any other `ESC x` two. The result is the committed lines joined with `\n`,
//! plus the pending line when it is not empty or the input ended with a newline.

use std::iter::Peekable;
use std::str::Chars;

/// Renders terminal output as plain text (see the module docs for the rules).
pub fn render_plain(text: &str) -> String {
    let mut screen = Lines::default();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => screen.col = 0,
            '\n' => screen.commit(),
            '\u{8}' => screen.backspace(),
            '\u{1b}' => escape(&mut chars, &mut screen),
            '\t' => screen.put(c),
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c) => {}
            c => screen.put(c),
        }
    }
    screen.finish(text.ends_with('\n'))
}

/// Committed lines, the line being written and the cursor column in it.
#[derive(Default)]
struct Lines {
    done: Vec<String>,
    line: Vec<char>,
    col: usize,
}

impl Lines {
    fn commit(&mut self) {
        self.done.push(std::mem::take(&mut self.line).into_iter().collect());
        self.col = 0;
    }

    fn put(&mut self, c: char) {
        if self.col < self.line.len() {
            self.line[self.col] = c;
        } else {
            self.line.resize(self.col, ' ');
            self.line.push(c);
        }
        self.col += 1;
    }

    fn backspace(&mut self) {
        if self.col > 0 {
            self.col -= 1;
            if self.col < self.line.len() {
                self.line.remove(self.col);
            }
        }
    }

    /// `ESC [ n K`.
    fn erase_line(&mut self, mode: u32) {
        match mode {
            0 => self.line.truncate(self.col),
            1 => {
                let end = (self.col + 1).min(self.line.len());
                self.line[..end].fill(' ');
            }
            2 => self.line.clear(),
            _ => {}
        }
    }

    /// `ESC [ 2 J` / `ESC [ 3 J`.
    fn clear(&mut self) {
        self.done.clear();
        self.line.clear();
    }

    fn finish(mut self, ended_with_newline: bool) -> String {
        if !self.line.is_empty() || ended_with_newline {
            self.done.push(self.line.into_iter().collect());
        }
        self.done.join("\n")
    }
}

/// Consumes one escape sequence (the ESC is already taken) and applies what it means.
fn escape(chars: &mut Peekable<Chars<'_>>, screen: &mut Lines) {
    let Some(kind) = chars.next() else { return };
    match kind {
        '[' => {
            let mut params = String::new();
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    let first = params.split(';').next().unwrap_or("").parse::<u32>().unwrap_or(0);
                    match c {
                        'K' if !params.starts_with('?') => screen.erase_line(first),
                        'J' if first == 2 || first == 3 => screen.clear(),
                        _ => {}
                    }
                    return;
                }
                params.push(c);
            }
        }
        ']' | 'P' | '_' | '^' => {
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    return;
                }
                if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                    chars.next();
                    return;
                }
            }
        }
        'O' => {
            chars.next();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_prompt_session_renders_as_seen() {
        let raw = "\u{1b}[?2004hpyro$ echo hi\r\n\u{1b}[?2004l\rhi\r\n\u{1b}[?2004hpyro$ ";
        assert_eq!(render_plain(raw), "pyro$ echo hi\nhi\npyro$ ");
    }

    #[test]
    fn carriage_returns_backspaces_and_erases_rewrite_the_line() {
        assert_eq!(render_plain("progress 10%\rprogress 100%\n"), "progress 100%\n");
        assert_eq!(render_plain("abc\rX\n"), "Xbc\n");
        assert_eq!(render_plain("abcd\u{8}\u{8}\n"), "ab\n");
        assert_eq!(render_plain("abc\u{8}X"), "abX");
        assert_eq!(render_plain("hello\r\u{1b}[Kbye"), "bye");
        assert_eq!(render_plain("hello\u{1b}[3D"), "hello", "cursor moves are consumed");
        assert_eq!(render_plain("abcdef\r\u{1b}[2Kx"), "x");
        assert_eq!(render_plain("abcdef\r\u{1b}[1K"), " bcdef");
        assert_eq!(render_plain("old\nlines\n\u{1b}[2Jfresh"), "fresh");
        assert_eq!(render_plain("\u{8}\u{8}a"), "a");
    }

    #[test]
    fn colours_titles_and_other_controls_vanish() {
        assert_eq!(render_plain("\u{1b}[1;31mred\u{1b}[0m plain"), "red plain");
        assert_eq!(render_plain("\u{1b}]0;my title\u{7}text"), "text");
        assert_eq!(render_plain("\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\"), "link");
        assert_eq!(render_plain("\u{1b}P1$r0m\u{1b}\\ok"), "ok");
        assert_eq!(render_plain("\u{1b}OAup\u{1b}=keypad\u{7}\u{0}\u{9b}"), "upkeypad");
        assert_eq!(render_plain("tab\there"), "tab\there");
        assert_eq!(render_plain("\u{1b}"), "");
        assert_eq!(render_plain("\u{1b}[12"), "", "an unfinished CSI is dropped");
    }

    #[test]
    fn trailing_newlines_and_empty_lines_are_kept() {
        assert_eq!(render_plain(""), "");
        assert_eq!(render_plain("\n"), "\n");
        assert_eq!(render_plain("a\n\nb"), "a\n\nb");
        assert_eq!(render_plain("a\r\n"), "a\n");
    }

    proptest! {
        #[test]
        fn output_holds_no_terminal_controls(text in "[a-z \\t\\r\\n\\x08\\x1b\\x07\\[\\];?0-9KJmOPh\\x9b✓]{0,80}") {
            let out = render_plain(&text);
            prop_assert!(out.chars().all(|c| c == '\n' || c == '\t' || !c.is_control()), "{:?} -> {:?}", text, out);
            prop_assert_eq!(render_plain(&out), out.clone(), "rendering is idempotent");
        }

        #[test]
        fn text_without_controls_is_unchanged(text in "[a-zé✓ \\t\\n]{0,80}") {
            prop_assert_eq!(render_plain(&text), text);
        }
    }
}
