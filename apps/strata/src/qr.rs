//! QR codes in the terminal: two modules per character cell with Unicode
//! half blocks, drawn for a dark-background terminal (light modules are the
//! filled glyphs, with the 4-module light quiet zone around the code).

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

use crate::error::{AppError, ErrorKind, Result};

/// Renders `data` as a QR code for the terminal: medium error correction,
/// or low when the data does not fit otherwise (an invite, ~2.3 KB).
pub(crate) fn render(data: &[u8]) -> Result<String> {
    let code = QrCode::with_error_correction_level(data, EcLevel::M);
    let code = code
        .or_else(|_| QrCode::with_error_correction_level(data, EcLevel::L))
        .map_err(|e| {
            AppError::new(
                ErrorKind::Usage,
                format!("cannot make a QR code of {} bytes: {e}", data.len()),
            )
            .hint("share the text form instead")
        })?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_module_with_a_quiet_zone() {
        let data = b"strata:example";
        let text = render(data).unwrap();
        let modules = QrCode::with_error_correction_level(data, EcLevel::M).unwrap().width();
        let side = modules + 8;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), side.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == side));
        // The quiet zone is light, drawn filled: the first line is all blocks.
        assert!(lines[0].chars().all(|c| c == '\u{2588}'));
        // Different data, different code.
        assert_ne!(render(b"strata:other").unwrap(), text);
    }

    #[test]
    fn too_much_data_is_an_error() {
        let err = render(&[0u8; 4000]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Usage);
    }
}
