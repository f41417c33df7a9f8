//! SVG -> PNG with resvg (pure Rust; text drawn with the system's fonts).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{InterpError, Result};
use resvg::{tiny_skia, usvg};

fn options() -> &'static usvg::Options<'static> {
    static OPTIONS: OnceLock<usvg::Options<'static>> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut opt = usvg::Options::default();
        let db = opt.fontdb_mut();
        db.load_system_fonts();
        if db.is_empty() {
            tracing::warn!("no system fonts found: PNG figures will have no text");
        }
        // plotters writes generic families; map them to fonts every Debian/Ubuntu machine has
        db.set_sans_serif_family("DejaVu Sans");
        db.set_serif_family("DejaVu Serif");
        db.set_monospace_family("DejaVu Sans Mono");
        opt
    })
}

fn err(path: &Path, message: String) -> InterpError {
    InterpError::Figure {
        path: path.to_path_buf(),
        message,
    }
}

/// Renders `svg` to a PNG beside it (same stem) at `scale` x its size, text drawn with the system's fonts
/// (DejaVu for the generic families); returns the PNG's path. Written through a temporary file and a rename.
pub fn svg_to_png(svg: &Path, scale: f32) -> Result<PathBuf> {
    let data = std::fs::read(svg).map_err(|source| InterpError::Io {
        path: svg.to_path_buf(),
        source,
    })?;
    let tree =
        usvg::Tree::from_data(&data, options()).map_err(|e| err(svg, format!("parsing: {e}")))?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(scale)
        .ok_or_else(|| err(svg, format!("cannot scale a {:?} image", tree.size())))?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| err(svg, "empty image".into()))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    let png = svg.with_extension("png");
    let bytes = pixmap
        .encode_png()
        .map_err(|e| err(&png, format!("encoding: {e}")))?;
    genir_io::write_atomic(&png, &bytes)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_an_svg_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("f.svg");
        std::fs::write(
            &svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20"><rect x="0" y="0" width="20" height="20" fill="red"/><text x="22" y="15" font-family="sans-serif" font-size="12">a</text></svg>"#,
        )
        .unwrap();
        let png = svg_to_png(&svg, 2.0).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let pix = tiny_skia::Pixmap::load_png(&png).unwrap();
        assert_eq!((pix.width(), pix.height()), (80, 40));
        let p = pix.pixel(5, 5).unwrap();
        assert_eq!((p.red(), p.green(), p.blue()), (255, 0, 0));
        let bad = dir.path().join("bad.svg");
        std::fs::write(&bad, "<svg").unwrap();
        let e = svg_to_png(&bad, 1.0).unwrap_err();
        assert!(e.to_string().contains("bad.svg"), "{e}");
    }
}
