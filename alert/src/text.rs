//! Attacker-controlled text made safe for where it lands.
//!
//! User agents, principal names, request parameters and error messages come straight from the
//! logs, so anyone who can call an AWS API can choose them. Rendered raw they could add lines to
//! an email (a fake `Subject:` or a fake "all clear"), hide text with bidi or zero-width
//! characters, or inject markup into a client that renders HTML. Everything taken from a finding
//! goes through one of these functions before it reaches a person.

/// Characters that display as nothing, reorder text or break lines without being `Cc` controls:
/// soft hyphen, joiners, bidi embeddings/isolates, line and paragraph separators, fillers,
/// variation selectors, the BOM and tag characters (which can smuggle invisible ASCII).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E007F}'
            | '\u{E0100}'..='\u{E01EF}'
    ) || is_noncharacter(c)
}

/// U+FDD0..U+FDEF and every U+xFFFE/U+xFFFF: SQS (an SNS subscriber, the dead-letter queue)
/// refuses messages that contain them.
pub fn is_noncharacter(c: char) -> bool {
    matches!(c, '\u{FDD0}'..='\u{FDEF}') || (c as u32 & 0xFFFE) == 0xFFFE
}

/// One line of printable ASCII (0x20..=0x7E) of at most `max` bytes, for SNS subjects and other
/// header-like places: SNS rejects control characters there and mail headers must not gain lines.
/// Whitespace and controls become single spaces (trimmed), invisible characters are dropped,
/// other non-ASCII becomes `?`; longer text is cut and ends with `...`.
pub fn subject_line(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max.saturating_add(1)));
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() || c.is_control() {
            space = !out.is_empty();
            continue;
        }
        let c = match c {
            '!'..='~' => c,
            c if is_invisible(c) => continue,
            _ => '?',
        };
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        if out.len() > max {
            break; // enough to know it must be cut
        }
    }
    if out.len() > max {
        out.truncate(max.saturating_sub(3));
        while out.ends_with(' ') {
            out.pop();
        }
        out.push_str(&"..."[..max.min(3)]);
    }
    out
}

/// How one input character is written by [`field`].
enum Esc {
    Raw(char),
    Short(char),
    Unicode(char),
}

fn esc(c: char) -> Esc {
    match c {
        '\n' => Esc::Short('n'),
        '\r' => Esc::Short('r'),
        '\t' => Esc::Short('t'),
        '\\' | '"' => Esc::Short(c),
        '<' | '>' | '&' => Esc::Unicode(c),
        c if c.is_control() || is_invisible(c) => Esc::Unicode(c),
        c => Esc::Raw(c),
    }
}

/// Output characters of an escape: `\uXXXX` per UTF-16 unit, so astral ones take two.
fn esc_len(e: &Esc) -> usize {
    match e {
        Esc::Raw(_) => 1,
        Esc::Short(_) => 2,
        Esc::Unicode(c) => 6 * c.len_utf16(),
    }
}

fn push_esc(out: &mut String, e: &Esc) {
    match *e {
        Esc::Raw(c) => out.push(c),
        Esc::Short(c) => {
            out.push('\\');
            out.push(c);
        }
        Esc::Unicode(c) => {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
}

/// One line of an email body, never a line break: escaped like a JSON string body (quotes,
/// backslashes, controls), plus invisible/bidi characters and `<`, `>`, `&` as `\uXXXX` so a mail
/// client that renders HTML never sees markup. At most `max_chars` characters of output: longer
/// text ends with `…(+N chars)`, N counting dropped input characters; escapes are never split.
pub fn field(s: &str, max_chars: usize) -> String {
    let total: usize = s.chars().map(|c| esc_len(&esc(c))).sum();
    let mut out = String::with_capacity(total.min(max_chars) + 16);
    if total <= max_chars {
        for c in s.chars() {
            push_esc(&mut out, &esc(c));
        }
        return out;
    }
    let n = s.chars().count();
    // "…(+" + N + " chars)": N has at most as many digits as n.
    let reserve = 10 + n.to_string().len();
    if max_chars < reserve {
        if max_chars > 0 {
            out.push('…');
        }
        return out;
    }
    let budget = max_chars - reserve;
    let (mut used, mut taken) = (0, 0);
    for c in s.chars() {
        let e = esc(c);
        if used + esc_len(&e) > budget {
            break;
        }
        used += esc_len(&e);
        taken += 1;
        push_esc(&mut out, &e);
    }
    out.push_str(&format!("…(+{} chars)", n - taken));
    out
}

/// [`field`] in double quotes, so where attacker text starts and ends is unambiguous
/// (at most `max_chars + 2` characters).
pub fn quoted(s: &str, max_chars: usize) -> String {
    format!("\"{}\"", field(s, max_chars))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn printable(s: &str) -> bool {
        s.bytes().all(|b| (0x20..=0x7e).contains(&b))
    }

    #[test]
    fn subject_lines_are_one_printable_line() {
        assert_eq!(subject_line("  a\r\n\tb \u{2028}\u{85} c  ", 100), "a b c");
        assert_eq!(subject_line("café\u{200B}\u{202E}x", 100), "caf?x");
        assert_eq!(subject_line("abcdefghij", 10), "abcdefghij");
        assert_eq!(subject_line("abcdefghijk", 10), "abcdefg...");
        assert_eq!(subject_line("abcdef    ghijk", 10), "abcdef...");
        assert_eq!(subject_line("abcd", 2), "..");
        assert_eq!(subject_line("abcd", 0), "");
        assert_eq!(subject_line("\r\n", 10), "");
        let s = subject_line(&"x\n".repeat(10_000), 100);
        assert!(s.len() <= 100 && printable(&s) && s.ends_with("..."), "{s}");
    }

    #[test]
    fn fields_escape_everything_that_could_break_a_line_or_hide_text() {
        assert_eq!(field("a\r\nb\t\"c\\", 100), r#"a\r\nb\t\"c\\"#);
        assert_eq!(field("\u{0}\u{7f}\u{85}\u{9b}", 100), r"\u0000\u007f\u0085\u009b");
        assert_eq!(
            field("\u{2028}\u{2029}\u{202e}\u{2066}\u{200b}\u{feff}", 100),
            r"\u2028\u2029\u202e\u2066\u200b\ufeff"
        );
        assert_eq!(field("<script>&", 100), r"\u003cscript\u003e\u0026");
        assert_eq!(field("\u{E0041}", 100), r"\udb40\udc41");
        assert_eq!(field("héllo €", 100), "héllo €");
        assert_eq!(quoted("a\"b", 10), r#""a\"b""#);
    }

    #[test]
    fn fields_are_capped_without_splitting_escapes() {
        assert_eq!(field("abcdef", 6), "abcdef");
        // 20 input chars, 20 output: reserve is 12, budget 8.
        let s = field("abcdefghijklmnopqrstu", 20);
        assert_eq!(s, "abcdefgh…(+13 chars)");
        assert_eq!(s.chars().count(), 20);
        // An escape that does not fit whole is dropped, not cut.
        let s = field("abcdefg\nhijklmnopqrstu", 20);
        assert_eq!(s, "abcdefg…(+15 chars)");
        assert_eq!(field("abcdefghijklmnopqrstu", 5), "…");
        assert_eq!(field("abc", 0), "");
        let long = "é".repeat(10_000);
        let s = field(&long, 300);
        assert!(s.chars().count() <= 300 && s.ends_with("…(+9715 chars)"), "{s}");
    }

    #[test]
    fn lossily_decoded_bytes_stay_one_safe_line() {
        let raw = String::from_utf8_lossy(b"ab\xff\xfe\r\nSubject: x");
        let f = field(&raw, 300);
        assert_eq!(f, "ab\u{FFFD}\u{FFFD}\\r\\nSubject: x");
        assert_eq!(f.lines().count(), 1);
        let s = subject_line(&raw, 100);
        assert_eq!(s, "ab?? Subject: x");
    }

    proptest! {
        #[test]
        fn field_output_has_no_control_or_separator(s in any::<String>(), max in 0usize..400) {
            let f = field(&s, max);
            prop_assert!(f.chars().count() <= max);
            for c in f.chars() {
                prop_assert!(!c.is_control() && !is_invisible(c) && !matches!(c, '<' | '>' | '&'), "{c:?} in {f:?}");
            }
            let q = quoted(&s, max);
            prop_assert_eq!(q.lines().count(), 1);
        }

        #[test]
        fn subject_line_is_printable_ascii_within_max(s in any::<String>(), max in 0usize..200) {
            let out = subject_line(&s, max);
            prop_assert!(out.len() <= max);
            prop_assert!(printable(&out), "{out:?}");
            prop_assert!(!out.starts_with(' ') && !out.ends_with(' '));
        }

        #[test]
        fn short_printable_text_passes_unchanged(s in "[a-zA-Z0-9 .:/_-]{0,50}") {
            prop_assert_eq!(field(&s, 100), s.clone());
            let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
            prop_assert_eq!(subject_line(&s, 100), collapsed);
        }
    }
}
