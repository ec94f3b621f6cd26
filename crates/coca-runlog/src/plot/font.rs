//! The font every chart's text is drawn with, built into the binary.
//!
//! plotters' default text backend looks fonts up through fontconfig, which a server or CI machine may not
//! have; with its `ab_glyph` backend the font is registered from bytes instead, so the PNGs look the same
//! everywhere. The file is DejaVu Sans reduced to ASCII and a few symbols (14 KB; see `assets/README.md`).

use std::sync::Once;

use plotters::style::FontStyle;

/// The family name charts ask for.
pub(crate) const FAMILY: &str = "sans-serif";

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-plot.ttf");

/// Register the built-in font under [`FAMILY`] (once per process).
pub(crate) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a TrueType file checked in with the crate (a test parses them). Were they ever
        // unusable, drawing text would fail with plotters' "font unavailable", reported as a plot error.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn built_in_font_parses() {
        assert!(plotters::style::register_font(
            "test-font",
            plotters::style::FontStyle::Normal,
            super::FONT
        )
        .is_ok());
    }
}
