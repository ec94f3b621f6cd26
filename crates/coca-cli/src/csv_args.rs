//! open_clip's `--csv-img-key` / `--csv-caption-key` / `--csv-separator`, shared by the commands that read CSV.

use anyhow::Result;
use clap::Args;
use coca_data::CsvOptions;

/// How to read a CSV/TSV collection, with open_clip's flag names and defaults.
#[derive(Debug, Clone, Args)]
pub struct CsvArgs {
    /// CSV column with image paths (open_clip's --csv-img-key).
    #[arg(long, default_value = "filepath", value_name = "COLUMN")]
    pub csv_img_key: String,
    /// CSV column with captions (open_clip's --csv-caption-key); '' for none.
    #[arg(long, default_value = "title", value_name = "COLUMN")]
    pub csv_caption_key: String,
    /// CSV field separator (open_clip's --csv-separator): one character, or \t for tab.
    #[arg(long, default_value = "\\t", value_name = "CHAR")]
    pub csv_separator: String,
}

impl CsvArgs {
    /// The reader options; an empty caption key means a CSV without captions.
    pub fn options(&self) -> Result<CsvOptions> {
        Ok(CsvOptions {
            img_key: self.csv_img_key.clone(),
            caption_key: (!self.csv_caption_key.is_empty()).then(|| self.csv_caption_key.clone()),
            separator: coca_data::parse_separator(&self.csv_separator)?,
        })
    }
}
