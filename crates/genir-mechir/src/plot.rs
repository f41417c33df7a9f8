//! Heatmaps of patching results, as SVG (labelled) or PNG (cells only: the pure-Rust bitmap backend has no
//! fonts), chosen by the file extension.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{MechirError, Result};
use crate::patch::{BlockPatching, HeadPatching};

/// One heatmap panel: `values[row][col]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// Label of the vertical axis.
    pub row_axis: String,
    /// Label of the horizontal axis.
    pub col_axis: String,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` values.
    pub values: Vec<f32>,
}

/// Blue (negative) - white (0) - red (positive), saturating at `|v| = scale`.
fn colour(v: f32, scale: f32) -> RGBColor {
    let t = if scale > 0.0 && v.is_finite() {
        (v / scale).clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let fade = |c: u8, t: f32| (255.0 - (255.0 - f32::from(c)) * t).round() as u8;
    if t >= 0.0 {
        RGBColor(fade(178, t), fade(24, t), fade(43, t))
    } else {
        RGBColor(fade(33, -t), fade(102, -t), fade(172, -t))
    }
}

fn scale_of(panels: &[Panel]) -> f32 {
    panels
        .iter()
        .flat_map(|p| p.values.iter())
        .filter(|v| v.is_finite())
        .fold(0f32, |m, v| m.max(v.abs()))
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> MechirError {
    MechirError::Plot {
        path: path.into(),
        message: e.to_string(),
    }
}

fn draw_labelled<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    scale: f32,
) -> std::result::Result<(), String> {
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0..p.cols, 0..p.rows)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(p.col_axis.as_str())
        .y_desc(p.row_axis.as_str())
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series((0..p.rows).flat_map(|r| {
            (0..p.cols).map(move |c| {
                Rectangle::new(
                    [(c, r), (c + 1, r + 1)],
                    colour(p.values[r * p.cols + c], scale).filled(),
                )
            })
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn draw_cells<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    p: &Panel,
    scale: f32,
) -> std::result::Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let (cw, ch) = (
        (w as f64 / p.cols.max(1) as f64),
        ((h as f64 - 4.0) / p.rows.max(1) as f64),
    );
    for r in 0..p.rows {
        for c in 0..p.cols {
            // Layer 0 at the bottom, as in the SVG.
            let y0 = ((p.rows - 1 - r) as f64 * ch) as i32;
            let x0 = (c as f64 * cw) as i32;
            let rect = Rectangle::new(
                [
                    (x0, y0),
                    (
                        ((c + 1) as f64 * cw) as i32,
                        ((p.rows - r) as f64 * ch) as i32,
                    ),
                ],
                colour(p.values[r * p.cols + c], scale).filled(),
            );
            area.draw(&rect).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Draws panels stacked vertically into `path` (`.svg` with titles and axes, `.png` with cells only), one
/// colour scale for all, symmetric around 0.
pub fn heatmap(panels: &[Panel], path: &Path) -> Result<()> {
    let scale = scale_of(panels);
    let n = panels.len().max(1) as u32;
    let size = (900, 40 + 220 * n);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    // Drawn into memory, then written atomically: a reader never sees half a figure.
    match ext.as_str() {
        "svg" => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
                for (area, p) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
                    draw_labelled(area, p, scale).map_err(|e| plot_err(path, e))?;
                }
                root.present().map_err(|e| plot_err(path, e))?;
            }
            genir_io::write_atomic(path, svg.as_bytes())?;
        }
        "png" => {
            let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
                root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
                for (area, p) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
                    draw_cells(area, p, scale).map_err(|e| plot_err(path, e))?;
                }
                root.present().map_err(|e| plot_err(path, e))?;
            }
            genir_io::write_atomic_with(path, |w| {
                let mut enc = png::Encoder::new(w, size.0, size.1);
                enc.set_color(png::ColorType::Rgb);
                enc.set_depth(png::BitDepth::Eight);
                let mut png = enc.write_header().map_err(|e| plot_err(path, e))?;
                png.write_image_data(&rgb).map_err(|e| plot_err(path, e))?;
                png.finish().map_err(|e| plot_err(path, e))
            })?;
        }
        other => {
            return Err(plot_err(
                path,
                format!("unknown figure format {other:?} (svg, png)"),
            ))
        }
    }
    Ok(())
}

/// Panels of a block-patching result: one per component, layers x positions.
pub fn block_panels(r: &BlockPatching) -> Vec<Panel> {
    let per = r.layers.len() * r.positions;
    r.components
        .iter()
        .enumerate()
        .map(|(ci, c)| Panel {
            title: format!("{} (mean over {} pairs)", c.name(), r.n_pairs),
            row_axis: "layer".into(),
            col_axis: "position".into(),
            rows: r.layers.len(),
            cols: r.positions,
            values: r.values[ci * per..(ci + 1) * per].to_vec(),
        })
        .collect()
}

/// The panel of a head-patching result: layers x heads (all positions), or one panel per layer of
/// heads x positions.
pub fn head_panels(r: &HeadPatching) -> Vec<Panel> {
    match &r.positions {
        None => vec![Panel {
            title: format!("attention heads, z patched (mean over {} pairs)", r.n_pairs),
            row_axis: "layer".into(),
            col_axis: "head".into(),
            rows: r.layers.len(),
            cols: r.heads,
            values: r.values.clone(),
        }],
        Some(ps) => r
            .layers
            .iter()
            .enumerate()
            .map(|(li, l)| {
                let per = r.heads * ps.len();
                Panel {
                    title: format!("layer {l}: heads by position"),
                    row_axis: "head".into(),
                    col_axis: "position".into(),
                    rows: r.heads,
                    cols: ps.len(),
                    values: r.values[li * per..(li + 1) * per].to_vec(),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel() -> Panel {
        Panel {
            title: "resid_pre".into(),
            row_axis: "layer".into(),
            col_axis: "position".into(),
            rows: 1,
            cols: 2,
            values: vec![2.0, -2.0],
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn png_heatmap_decodes_with_the_cells_colours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/heads.png");
        heatmap(&[panel()], &path).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (900, 260));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let px = |x: usize, y: usize| {
            let i = (y * 900 + x) * 3;
            (buf[i], buf[i + 1], buf[i + 2])
        };
        // Full scale positive is red, full scale negative blue (the scale is the largest |value|).
        assert_eq!(px(225, 100), (178, 24, 43));
        assert_eq!(px(675, 100), (33, 102, 172));
        assert_eq!(files(&dir.path().join("sub")), ["heads.png"]);
    }

    #[test]
    fn svg_heatmap_is_a_whole_document_and_replaces_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heads.svg");
        std::fs::write(&path, "old").unwrap();
        heatmap(&[panel(), panel()], &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("height=\"480\""));
        assert_eq!(svg.matches("resid_pre").count(), 2, "one title per panel");
        assert_eq!(files(dir.path()), ["heads.svg"]);
    }

    #[test]
    fn unknown_format_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heads.jpg");
        let err = heatmap(&[panel()], &path).unwrap_err().to_string();
        assert!(
            err.contains("heads.jpg") && err.contains("svg, png"),
            "{err}"
        );
        assert!(files(dir.path()).is_empty());
    }
}
