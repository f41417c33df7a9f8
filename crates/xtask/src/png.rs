//! SVG -> PNG with resvg (pure Rust; text drawn with the system's fonts).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use resvg::{tiny_skia, usvg};

fn options() -> &'static usvg::Options<'static> {
    static OPTIONS: OnceLock<usvg::Options<'static>> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut opt = usvg::Options::default();
        let db = opt.fontdb_mut();
        db.load_system_fonts();
        if db.len() == 0 {
            tracing::warn!("no system fonts found: PNG figures will have no text");
        }
        // plotters writes generic families; map them to fonts every Debian/Ubuntu machine has
        db.set_sans_serif_family("DejaVu Sans");
        db.set_serif_family("DejaVu Serif");
        db.set_monospace_family("DejaVu Sans Mono");
        opt
    })
}

/// Renders `svg` to a PNG beside it (same stem) at `scale` x its size; returns the PNG's path.
pub fn svg_to_png(svg: &Path, scale: f32) -> Result<PathBuf> {
    let data = std::fs::read(svg).with_context(|| format!("reading {}", svg.display()))?;
    let tree = usvg::Tree::from_data(&data, options())
        .with_context(|| format!("parsing {}", svg.display()))?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(scale)
        .ok_or_else(|| anyhow!("{}: cannot scale a {:?} image", svg.display(), tree.size()))?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| anyhow!("{}: empty image", svg.display()))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    let png = svg.with_extension("png");
    let bytes = pixmap
        .encode_png()
        .map_err(|e| anyhow!("encoding {}: {e}", png.display()))?;
    crate::steps::write_atomic(&png, &bytes)?;
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
        let err = svg_to_png(&bad, 1.0).unwrap_err();
        assert!(format!("{err:#}").contains("bad.svg"), "{err:#}");
    }
}
