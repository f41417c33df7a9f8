//! Figures of the analyses' tables, drawn with plotters as SVG files; [`svg_to_png`] renders any of them as
//! PNG (resvg, with the system's fonts).
//!
//! Each `*_figure(df, path)` reads the table its analysis returns (averaging over queries) and writes `path`,
//! which must end in `.svg`.

use std::collections::BTreeMap;
use std::path::Path;

use genir_data::Table;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::common::{f64_col, i64_col, str_col};
use crate::error::{InterpError, Result};
pub use crate::png::svg_to_png;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Named line series: `(name, points)`.
type Series = Vec<(String, Vec<(f64, f64)>)>;

/// A heatmap panel: title, row names, column names, values per row.
type Panel = (String, Vec<String>, Vec<String>, Vec<Vec<f64>>);

/// matplotlib's tab10: ten distinct colours (the logit lens draws nine series).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn fig_err(path: &Path) -> impl Fn(String) -> InterpError + '_ {
    move |message| InterpError::Figure {
        path: path.to_path_buf(),
        message,
    }
}

fn check_svg(path: &Path) -> Result<()> {
    let ok = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !ok {
        return Err(fig_err(path)(
            "figures are written as SVG: give a path ending in .svg".into(),
        ));
    }
    Ok(())
}

/// Mean of the values grouped by key (NaN values are skipped).
fn group_mean<K: Ord + Clone>(keys: &[K], values: &[f64]) -> BTreeMap<K, f64> {
    let mut acc: BTreeMap<K, (f64, usize)> = BTreeMap::new();
    for (k, &v) in keys.iter().zip(values) {
        if v.is_finite() {
            let e = acc.entry(k.clone()).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
    }
    acc.into_iter()
        .map(|(k, (s, n))| (k, s / n as f64))
        .collect()
}

/// A line chart: one series per name, points `(x, y)`.
fn lines(
    area: &Area<'_>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    log_y: bool,
) -> std::result::Result<(), String> {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60);
    let e = |e: &dyn std::fmt::Display| e.to_string();
    // whole-number x values (layers, decoding steps): one labelled tick per value, no fractions
    let integral = series
        .iter()
        .flat_map(|s| s.1.iter())
        .all(|&(x, _)| x.fract() == 0.0);
    let x_ticks = if integral && x1 - x0 <= 40.0 {
        (x1 - x0) as usize + 1
    } else {
        10
    };
    let x_fmt = move |x: &f64| {
        if integral {
            format!("{x:.0}")
        } else {
            format!("{x}")
        }
    };
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_labels(x_ticks)
                .x_label_formatter(&x_fmt)
                .draw()
                .map_err(|x| e(&x))?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let c = PALETTE[i % PALETTE.len()];
                // a one-point series (e.g. resid_pre, read only before the first layer) is its marker alone:
                // an SVG polyline needs two points
                if pts.len() >= 2 {
                    chart
                        .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                        .map_err(|x| e(&x))?;
                }
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(|x| e(&x))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|x| e(&x))?;
        }};
    }
    if log_y {
        let lo = y0.clamp(1e-3, 1.0);
        let hi = (y1 * 1.5).max(lo * 10.0);
        draw!(builder
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
            .map_err(|x| e(&x))?);
    } else {
        let pad = ((y1 - y0) * 0.1).max(1e-3);
        draw!(builder
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|x| e(&x))?);
    }
    Ok(())
}

/// Diverging colour for `v` in [-1, 1]: blue (-1), white (0), red (1); NaN is grey.
fn diverging(v: f64) -> RGBColor {
    if !v.is_finite() {
        return RGBColor(200, 200, 200);
    }
    let t = v.clamp(-1.0, 1.0);
    let fade = |c: u8, t: f64| (255.0 - (255.0 - f64::from(c)) * t).round() as u8;
    if t >= 0.0 {
        RGBColor(fade(178, t), fade(24, t), fade(43, t))
    } else {
        RGBColor(fade(33, -t), fade(102, -t), fade(172, -t))
    }
}

/// Rows and columns (in order of first appearance) of `(row, column)` keys and the grid of mean values (NaN
/// where no entry).
#[allow(clippy::type_complexity)]
fn mean_grid(
    keys: &[(String, String)],
    values: &[f64],
) -> (Vec<String>, Vec<String>, Vec<Vec<f64>>) {
    let means = group_mean(keys, values);
    let (mut rows, mut cols): (Vec<String>, Vec<String>) = (vec![], vec![]);
    for k in keys {
        if !rows.contains(&k.0) {
            rows.push(k.0.clone());
        }
        if !cols.contains(&k.1) {
            cols.push(k.1.clone());
        }
    }
    let grid = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| {
                    means
                        .get(&(r.clone(), c.clone()))
                        .copied()
                        .unwrap_or(f64::NAN)
                })
                .collect()
        })
        .collect();
    (rows, cols, grid)
}

/// A heatmap: `values[row][col]`, coloured by `colour`, each cell labelled with its value.
fn heatmap(
    area: &Area<'_>,
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[Vec<f64>],
    colour: &dyn Fn(f64) -> RGBColor,
) -> std::result::Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let (nr, nc) = (rows.len().max(1) as i32, cols.len().max(1) as i32);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d((0..nc).into_segmented(), (0..nr).into_segmented())
        .map_err(|x| e(&x))?;
    let label = |names: &[String], v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(cols.len().max(1))
        .y_labels(rows.len().max(1))
        .x_label_formatter(&|v| label(cols, v))
        .y_label_formatter(&|v| label(rows, v))
        .draw()
        .map_err(|x| e(&x))?;
    let cells = values.iter().enumerate().flat_map(|(r, row)| {
        row.iter()
            .enumerate()
            .map(move |(c, &v)| (r as i32, c as i32, v))
    });
    chart
        .draw_series(cells.clone().map(|(r, c, v)| {
            Rectangle::new(
                [
                    (SegmentValue::Exact(c), SegmentValue::Exact(r)),
                    (SegmentValue::Exact(c + 1), SegmentValue::Exact(r + 1)),
                ],
                colour(v).filled(),
            )
        }))
        .map_err(|x| e(&x))?;
    if values.iter().map(Vec::len).sum::<usize>() <= 400 {
        chart
            .draw_series(cells.map(|(r, c, v)| {
                Text::new(
                    if v.is_finite() {
                        format!("{v:.2}")
                    } else {
                        "-".into()
                    },
                    (SegmentValue::CenterOf(c), SegmentValue::CenterOf(r)),
                    ("sans-serif", 11).into_font().color(&BLACK),
                )
            }))
            .map_err(|x| e(&x))?;
    }
    Ok(())
}

/// Vertical bars: one group per label, one bar per series.
fn bars(
    area: &Area<'_>,
    title: &str,
    labels: &[String],
    series: &[(String, Vec<f64>)],
) -> std::result::Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let n = labels.len().max(1) as i32;
    let k = series.len().max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(50)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..1.05f64)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_labels(labels.len().max(1))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|x| e(&x))?;
    // Bars are drawn in the plotting area's pixel space, inside each label's segment.
    for (s, (name, values)) in series.iter().enumerate() {
        let c = PALETTE[s % PALETTE.len()];
        let plot = chart.plotting_area().strip_coord_spec();
        let dims = plot.dim_in_pixel();
        let width = f64::from(dims.0) / f64::from(n);
        for (i, &v) in values.iter().enumerate() {
            let x0 = width * (i as f64 + 0.1 + 0.8 * s as f64 / k);
            let x1 = x0 + 0.8 * width / k;
            let y = |v: f64| (f64::from(dims.1) * (1.0 - v.clamp(0.0, 1.05) / 1.05)) as i32;
            plot.draw(&Rectangle::new(
                [(x0 as i32, y(v)), (x1 as i32, y(0.0))],
                c.filled(),
            ))
            .map_err(|x| e(&x))?;
        }
        chart
            .draw_series(std::iter::empty::<Circle<(SegmentValue<i32>, f64), i32>>())
            .map_err(|x| e(&x))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    Ok(())
}

fn render(
    path: &Path,
    size: (u32, u32),
    panels: usize,
    draw: impl FnOnce(Vec<Area<'_>>) -> std::result::Result<(), String>,
) -> Result<()> {
    check_svg(path)?;
    // Drawn into memory, then written atomically: a reader never sees half a figure.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|x| fig_err(path)(x.to_string()))?;
        let areas = root.split_evenly((panels.max(1), 1));
        draw(areas).map_err(fig_err(path))?;
        root.present().map_err(|x| fig_err(path)(x.to_string()))?;
    }
    genir_io::write_atomic(path, svg.as_bytes())?;
    tracing::info!(path = %path.display(), "wrote figure");
    Ok(())
}

/// Line plot of the logit lens table ([`crate::lens::logit_lens`]): mean rank of the correct docid token per
/// layer for each component (x = 0 is the decoder input, x = l + 1 is inside / after layer l), and the mean
/// rank of all docid tokens and the median rank of the non-docid tokens in the residual stream (as the
/// paper's figure); log scale.
pub fn logit_lens_figure(df: &Table, path: &Path) -> Result<()> {
    let layer = i64_col(df, "layer")?;
    let comp = str_col(df, "component")?;
    let rank = f64_col(df, "rank")?;
    let mean_d = f64_col(df, "mean_rank_docids")?;
    // the paper plots the median of the non-docid tokens (tables of older runs have only the mean)
    let (mean_n, non_docid_label) = match f64_col(df, "median_rank_non_docids") {
        Ok(v) => (v, "non-docid tokens (median)"),
        Err(_) => (
            f64_col(df, "mean_rank_non_docids")?,
            "non-docid tokens (mean)",
        ),
    };
    let x = |l: i64, c: &str| {
        if c == "resid_pre" {
            0.0
        } else {
            l as f64 + 1.0
        }
    };
    let keys: Vec<(String, i64)> = comp.iter().cloned().zip(layer.iter().copied()).collect();
    let mut series = Vec::new();
    for (name, values) in [
        ("", &rank),
        ("docid tokens (mean)", &mean_d),
        (non_docid_label, &mean_n),
    ] {
        let means = group_mean(&keys, values);
        let mut by_comp: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for ((c, l), v) in means {
            let resid = c == "resid_post" || c == "resid_pre";
            if name.is_empty() {
                by_comp
                    .entry(format!("correct docid: {c}"))
                    .or_default()
                    .push((x(l, &c), v));
            } else if resid {
                by_comp
                    .entry(name.to_string())
                    .or_default()
                    .push((x(l, &c), v));
            }
        }
        for (k, mut pts) in by_comp {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push((k, pts));
        }
    }
    render(path, (900, 600), 1, |areas| {
        lines(
            &areas[0],
            "Logit lens (first decoding step)",
            "decoder layer",
            "rank (1 = top)",
            &series,
            true,
        )
    })
}

/// Line plots of the component contributions table ([`crate::lens::component_contributions`]): per layer,
/// each component's norm relative to the residual change, and its cosine similarity with the layer output.
pub fn contribution_figure(df: &Table, path: &Path) -> Result<()> {
    let layer = i64_col(df, "layer")?;
    let comp = str_col(df, "component")?;
    let keys: Vec<(String, i64)> = comp.iter().cloned().zip(layer.iter().copied()).collect();
    let make = |col: &str| -> Result<Series> {
        let means = group_mean(&keys, &f64_col(df, col)?);
        let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for ((c, l), v) in means {
            if matches!(c.as_str(), "self_attn" | "cross_attn" | "mlp") {
                by.entry(c).or_default().push((l as f64, v));
            }
        }
        Ok(by.into_iter().collect())
    };
    let ratio = make("ratio_to_delta")?;
    let cos = make("cos_resid_post")?;
    render(path, (900, 900), 2, |areas| {
        lines(
            &areas[0],
            "Norm relative to the residual change",
            "decoder layer",
            "||component|| / ||delta||",
            &ratio,
            false,
        )?;
        lines(
            &areas[1],
            "Cosine similarity with the layer output",
            "decoder layer",
            "cosine",
            &cos,
            false,
        )
    })
}

/// Heatmaps of the patching table ([`crate::patching::activation_patching`]), mean normalised value over
/// pairs: layer x component, layer x head (self- and cross-attention), encoder position, and layer x
/// decoder position, one panel for each target present.
pub fn patching_figure(df: &Table, path: &Path) -> Result<()> {
    let target = str_col(df, "target")?;
    let layer = i64_col(df, "layer")?;
    let comp = str_col(df, "component")?;
    let head = i64_col(df, "head")?;
    let pos = i64_col(df, "position")?;
    let value = f64_col(df, "value")?;
    let mut panels: Vec<Panel> = Vec::new();
    for t in [
        "components",
        "heads",
        "encoder_positions",
        "decoder_positions",
    ] {
        let idx: Vec<usize> = (0..target.len()).filter(|&i| target[i] == t).collect();
        if idx.is_empty() {
            continue;
        }
        // (row key, column key) per entry
        let key = |i: usize| -> (String, String) {
            match t {
                "components" => (format!("layer {}", layer[i]), comp[i].clone()),
                "heads" => (
                    format!("layer {}", layer[i]),
                    format!("{} {}", comp[i].trim_end_matches("_attn"), head[i]),
                ),
                "encoder_positions" => ("encoder out".into(), format!("{:03}", pos[i])),
                _ => (
                    format!("{} {}", comp[i], layer[i]),
                    format!("pos {}", pos[i]),
                ),
            }
        };
        let keys: Vec<(String, String)> = idx.iter().map(|&i| key(i)).collect();
        let vals: Vec<f64> = idx.iter().map(|&i| value[i]).collect();
        let (rows, cols, grid) = mean_grid(&keys, &vals);
        panels.push((t.replace('_', " "), rows, cols, grid));
    }
    if panels.is_empty() {
        return Err(InterpError::Input(
            "the patching table has no patched rows".into(),
        ));
    }
    let n = panels.len();
    render(path, (1000, 380 * n as u32), n, |areas| {
        for (a, (title, rows, cols, grid)) in areas.iter().zip(&panels) {
            heatmap(
                a,
                &format!("Activation patching: {title} (0 = corrupted, 1 = clean)"),
                rows,
                cols,
                grid,
                &diverging,
            )?;
        }
        Ok(())
    })
}

/// Heatmap of a path-patching table ([`crate::stages::path_patching`]): the mean normalised effect of each
/// sender (columns) on each receiver (rows).
pub fn path_patching_figure(df: &Table, path: &Path) -> Result<()> {
    let short = |s: &str| {
        s.trim_start_matches("decoder.blocks.")
            .replace(".hook_", " ")
            .replace("_out", "")
    };
    let keys: Vec<(String, String)> = str_col(df, "receiver")?
        .iter()
        .zip(str_col(df, "sender")?)
        .map(|(r, s)| (short(r), short(&s)))
        .collect();
    let (rows, cols, grid) = mean_grid(&keys, &f64_col(df, "value")?);
    if rows.is_empty() {
        return Err(InterpError::Input(
            "the path-patching table is empty".into(),
        ));
    }
    render(
        path,
        (1000, (160 + 40 * rows.len()).max(380) as u32),
        1,
        |areas| {
            heatmap(
                &areas[0],
                "Path patching: sender (column) -> receiver (row), 0 = corrupted, 1 = clean",
                &rows,
                &cols,
                &grid,
                &diverging,
            )
        },
    )
}

/// Line plot of a stage-evidence table ([`crate::stages::derive_stages`]): per decoder layer, the lens's
/// reciprocal rank of the correct docid and the patching effect of each component, with the stage of each
/// layer in the legend.
pub fn stages_figure(df: &Table, path: &Path) -> Result<()> {
    let layer = i64_col(df, "layer")?;
    let stage = str_col(df, "stage")?;
    let mut bounds = String::new();
    for (i, s) in stage.iter().enumerate() {
        if i == 0 || stage[i - 1] != *s {
            bounds.push_str(&format!(" {s} from layer {};", layer[i]));
        }
    }
    let mut series = Vec::new();
    for (name, c) in [
        ("lens reciprocal rank (resid_post)", "lens_reciprocal_rank"),
        ("self-attention patching", "self_attn_patch"),
        ("cross-attention patching", "cross_attn_patch"),
        ("MLP patching", "mlp_patch"),
    ] {
        let v = f64_col(df, c)?;
        let pts: Vec<(f64, f64)> = layer
            .iter()
            .zip(v)
            .filter(|(_, y)| y.is_finite())
            .map(|(&x, y)| (x as f64, y))
            .collect();
        series.push((name.to_string(), pts));
    }
    render(path, (900, 500), 1, |areas| {
        lines(
            &areas[0],
            &format!("Decoder stages:{}", bounds.trim_end_matches(';')),
            "decoder layer",
            "value",
            &series,
            false,
        )
    })
}

/// Bar chart of an encoder-swap table ([`crate::swap::SwapEvaluation::to_frame`], several concatenated):
/// Hits@1 and Hits@10 per label and subset.
pub fn swap_figure(df: &Table, path: &Path) -> Result<()> {
    let label = str_col(df, "label")?;
    let subset = str_col(df, "subset")?;
    let names: Vec<String> = label
        .iter()
        .zip(&subset)
        .map(|(l, s)| format!("{l} ({s})"))
        .collect();
    let series = vec![
        ("Hits@1".to_string(), f64_col(df, "hits_at_1")?),
        ("Hits@10".to_string(), f64_col(df, "hits_at_10")?),
    ];
    render(path, (900, 500), 1, |areas| {
        bars(&areas[0], "Encoder swap", &names, &series)
    })
}

/// Bar chart of an ablation table ([`crate::ablation::ablation_study`]): Hits@1 and Hits@10 per ablation.
pub fn ablation_figure(df: &Table, path: &Path) -> Result<()> {
    let label = str_col(df, "label")?;
    let mode = str_col(df, "mode")?;
    let names: Vec<String> = label
        .iter()
        .zip(&mode)
        .map(|(l, m)| {
            if m == "none" {
                l.clone()
            } else {
                format!("{l} ({m})")
            }
        })
        .collect();
    let series = vec![
        ("Hits@1".to_string(), f64_col(df, "hits_at_1")?),
        ("Hits@10".to_string(), f64_col(df, "hits_at_10")?),
    ];
    render(path, (900, 500), 1, |areas| {
        bars(&areas[0], "Ablation", &names, &series)
    })
}

/// Heatmap of the head projection table ([`crate::heads::head_vocab_projection`]): per layer and head, the
/// mean rank of the correct docid token among docid tokens in the head's projection (darker = better).
pub fn head_projection_figure(df: &Table, path: &Path) -> Result<()> {
    let part = str_col(df, "part")?;
    let layer = i64_col(df, "layer")?;
    let head = i64_col(df, "head")?;
    let rank = f64_col(df, "rank")?;
    let idx: Vec<usize> = (0..part.len()).filter(|&i| part[i] == "correct").collect();
    if idx.is_empty() {
        return Err(InterpError::Input(
            "the head projection table has no `correct` rows".into(),
        ));
    }
    let keys: Vec<(i64, i64)> = idx.iter().map(|&i| (layer[i], head[i])).collect();
    let means = group_mean(&keys, &idx.iter().map(|&i| rank[i]).collect::<Vec<_>>());
    let layers: Vec<i64> = {
        let mut v: Vec<i64> = keys.iter().map(|k| k.0).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let heads: Vec<i64> = {
        let mut v: Vec<i64> = keys.iter().map(|k| k.1).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let max = means.values().copied().fold(1.0f64, f64::max);
    let grid: Vec<Vec<f64>> = layers
        .iter()
        .map(|&l| {
            heads
                .iter()
                .map(|&h| means.get(&(l, h)).copied().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    let rows: Vec<String> = layers.iter().map(|l| format!("layer {l}")).collect();
    let cols: Vec<String> = heads.iter().map(|h| format!("head {h}")).collect();
    let colour = move |v: f64| {
        if !v.is_finite() {
            return diverging(f64::NAN);
        }
        // rank 1 -> full colour, the worst rank -> white
        let t = if max <= 1.0 {
            1.0
        } else {
            1.0 - v.max(1.0).ln() / max.ln()
        };
        diverging(t)
    };
    render(path, (900, 120 + 60 * rows.len() as u32), 1, |areas| {
        heatmap(
            &areas[0],
            "Head projection: mean rank of the correct docid among docids",
            &rows,
            &cols,
            &grid,
            &colour,
        )
    })
}

/// Writes an analysis's table (`{stem}.parquet`, `{stem}.csv`) and figure (`{stem}.svg`, `{stem}.png`) into
/// `dir`; returns the four paths in that order.
pub fn write_analysis(
    df: &Table,
    dir: &Path,
    stem: &str,
    figure: fn(&Table, &Path) -> Result<()>,
) -> Result<[std::path::PathBuf; 4]> {
    let (parquet, csv) = crate::common::write_table(df, &dir.join(stem))?;
    let svg = dir.join(format!("{stem}.svg"));
    figure(df, &svg)?;
    let png = svg_to_png(&svg, 2.0)?;
    Ok([parquet, csv, svg, png])
}
