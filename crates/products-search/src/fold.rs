//! Case folding for search: every character maps to one representative of
//! its Unicode *simple* case-folding orbit (K, k and the Kelvin sign; S, s
//! and long s; Σ, σ and ς; ß and ẞ ...), chosen as the lowercase ASCII
//! letter when the orbit has one, else the orbit's smallest character.
//! Simple folding maps one character to one, so the folded text is matched
//! byte for byte; it is what `regex` crates' and Go's `(?i)` use. Full
//! folding (ß ↔ "ss") is not: a case-insensitive regex does not do it either.

use std::sync::LazyLock;

use regex_syntax::hir::{ClassUnicode, ClassUnicodeRange};

/// The representative of each Basic Multilingual Plane character, computed
/// once on first use (a few tens of ms); characters above it fold on the fly.
static BMP: LazyLock<Box<[char]>> = LazyLock::new(|| {
    (0..=0xFFFFu32)
        .map(|code| char::from_u32(code).map_or('\u{FFFD}', representative))
        .collect()
});

/// `text` case folded (see the module doc).
pub fn fold(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    fold_into(text, &mut folded);
    folded
}

/// Appends `text`, case folded, to `out`.
pub fn fold_into(text: &str, out: &mut String) {
    for c in text.chars() {
        out.push(fold_char(c));
    }
}

fn fold_char(c: char) -> char {
    if c.is_ascii() {
        c.to_ascii_lowercase()
    } else if (c as u32) <= 0xFFFF {
        BMP[c as usize]
    } else {
        representative(c)
    }
}

fn representative(c: char) -> char {
    let mut orbit = ClassUnicode::new([ClassUnicodeRange::new(c, c)]);
    orbit.case_fold_simple();
    let mut chars = orbit.iter().flat_map(|range| range.start()..=range.end());
    let all: Vec<char> = chars.by_ref().collect();
    all.iter()
        .find(|c| c.is_ascii())
        .map(|c| c.to_ascii_lowercase())
        .or_else(|| all.iter().min().copied())
        .unwrap_or(c)
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn orbits_fold_to_one_representative() {
        assert_eq!(fold("MuG"), "mug");
        // Kelvin sign, long s, final sigma, sharp s: simple-folding orbits.
        assert_eq!(fold("\u{212A}"), "k");
        assert_eq!(fold("ſ"), "s");
        assert_eq!(fold("ΣΑΣ"), fold("σας"));
        assert_eq!(fold("ẞ"), fold("ß"));
        assert_eq!(fold("ÉCOLE"), fold("école"));
        assert_eq!(fold("Ǆ"), fold("ǆ"));
        // Characters without a case stay as they are.
        assert_eq!(fold("日本 123 .*"), "日本 123 .*");
        // Full folding (ß → ss) is not simple folding.
        assert_ne!(fold("ß"), "ss");
        // Above the BMP (Deseret).
        assert_eq!(fold("\u{10400}"), fold("\u{10428}"));
    }

    #[test]
    fn same_length_in_characters() {
        for text in ["İstanbul", "ǅ", "ΐ", "ﬁ"] {
            assert_eq!(fold(text).chars().count(), text.chars().count());
        }
    }
}
