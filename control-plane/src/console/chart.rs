//! The latency chart of a domain's page: p50, p95 and p99 of the total time per region as
//! horizontal bars, laid out here as numbers and drawn by the template as inline SVG (no
//! script, no style attribute: the strict CSP allows neither inline). Pure.

/// One bar: a percentile of one region.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// `p50`, `p95` or `p99` (also the bar's CSS class).
    pub percentile: &'static str,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// The value as text, e.g. `182 ms`, drawn after the bar.
    pub label: String,
    pub label_x: u32,
    pub label_y: u32,
}

/// One region's group of bars and its name on the left.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub region: String,
    pub name_y: u32,
    pub bars: Vec<Bar>,
}

/// A vertical grid line and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub x: u32,
    pub label: String,
}

/// The whole chart; `groups` is empty when no region has a sample in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub plot_left: u32,
    pub plot_top: u32,
    pub plot_bottom: u32,
    pub groups: Vec<Group>,
    pub ticks: Vec<Tick>,
    /// A sentence describing the chart for screen readers.
    pub description: String,
}

const WIDTH: u32 = 640;
const LEFT: u32 = 64;
/// Room for the value labels after the longest bar.
const RIGHT: u32 = 72;
const TOP: u32 = 8;
const BAR: u32 = 12;
const GAP: u32 = 2;
const GROUP_GAP: u32 = 14;
const AXIS: u32 = 20;

/// A duration in microseconds as people read it: `850 µs`, `12.3 ms`, `182 ms`, `2.41 s`.
pub fn duration(us: u64) -> String {
    match us {
        0..=999 => format!("{us} µs"),
        1_000..=9_999 => format!("{:.1} ms", us as f64 / 1000.0),
        10_000..=999_999 => format!("{} ms", (us as f64 / 1000.0).round()),
        _ => format!("{:.2} s", us as f64 / 1_000_000.0),
    }
}

/// A round step for about four grid lines up to `max` microseconds.
fn step(max: u64) -> u64 {
    let rough = (max / 4).max(1);
    let magnitude = 10u64.pow(rough.ilog10());
    [1, 2, 5, 10].into_iter().map(|m| m * magnitude).find(|s| *s >= rough).unwrap_or(10 * magnitude)
}

/// Lays out `(region, [p50, p95, p99])` rows (microseconds).
pub fn latency(rows: &[(String, [u64; 3])]) -> Chart {
    let max = rows.iter().flat_map(|(_, p)| p.iter().copied()).max().unwrap_or(0).max(1);
    let step = step(max);
    let top_value = max.div_ceil(step) * step;
    let span = WIDTH - LEFT - RIGHT;
    let scale = |us: u64| ((us as f64 / top_value as f64) * f64::from(span)).round() as u32;
    let group_height = 3 * BAR + 2 * GAP;
    let mut groups = Vec::new();
    let mut y = TOP;
    for (region, values) in rows {
        let bars = ["p50", "p95", "p99"]
            .into_iter()
            .zip(values)
            .enumerate()
            .map(|(i, (percentile, us))| {
                let bar_y = y + i as u32 * (BAR + GAP);
                let width = scale(*us).max(1);
                Bar {
                    percentile,
                    x: LEFT,
                    y: bar_y,
                    width,
                    height: BAR,
                    label: format!("{percentile} {}", duration(*us)),
                    label_x: LEFT + width + 4,
                    label_y: bar_y + BAR - 2,
                }
            })
            .collect();
        groups.push(Group { region: region.clone(), name_y: y + group_height / 2 + 4, bars });
        y += group_height + GROUP_GAP;
    }
    let plot_bottom = y.saturating_sub(GROUP_GAP / 2).max(TOP);
    let ticks = (0..=top_value / step)
        .map(|i| Tick { x: LEFT + scale(i * step), label: duration(i * step) })
        .collect();
    let description = if rows.is_empty() {
        "no latency recorded in this window".to_owned()
    } else {
        rows.iter()
            .map(|(region, [p50, p95, p99])| {
                format!("{region}: p50 {}, p95 {}, p99 {}", duration(*p50), duration(*p95), duration(*p99))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    Chart {
        width: WIDTH,
        height: plot_bottom + AXIS,
        plot_left: LEFT,
        plot_top: TOP,
        plot_bottom,
        groups,
        ticks,
        description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(850), "850 µs");
        assert_eq!(duration(12_345), "12 ms");
        assert_eq!(duration(1_234), "1.2 ms");
        assert_eq!(duration(182_000), "182 ms");
        assert_eq!(duration(2_410_000), "2.41 s");
    }

    #[test]
    fn bars_scale_to_the_largest_value_and_stay_inside() {
        let chart =
            latency(&[("ams".into(), [100_000, 200_000, 400_000]), ("sin".into(), [50_000, 60_000, 70_000])]);
        assert_eq!(chart.groups.len(), 2);
        let ams = &chart.groups[0].bars;
        assert_eq!(ams.len(), 3);
        assert!(ams[0].width < ams[1].width && ams[1].width < ams[2].width);
        for bar in chart.groups.iter().flat_map(|g| &g.bars) {
            assert!(bar.x + bar.width <= WIDTH - RIGHT, "{bar:?}");
            assert!(bar.y + bar.height <= chart.plot_bottom);
        }
        assert!(chart.groups[1].bars[0].y > ams[2].y, "groups stack downwards");
        assert_eq!(chart.ticks.first().map(|t| t.x), Some(LEFT));
        assert!(chart.ticks.last().unwrap().x <= WIDTH - RIGHT);
        assert!(chart.description.contains("ams: p50 100 ms, p95 200 ms, p99 400 ms"));
    }

    #[test]
    fn an_empty_chart_says_so() {
        let chart = latency(&[]);
        assert!(chart.groups.is_empty());
        assert_eq!(chart.description, "no latency recorded in this window");
    }

    #[test]
    fn grid_steps_are_round() {
        assert_eq!(step(400_000), 100_000);
        assert_eq!(step(70_000), 20_000);
        assert_eq!(step(3), 1);
    }
}
