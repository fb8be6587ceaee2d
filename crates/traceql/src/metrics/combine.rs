//! Arithmetic between metrics series (`q1 / q2`, `q * 100`) and the second stages that filter
//! or rank whole series (`| topk(n)`, `> 0.5`).

use super::*;

fn apply(op: BinaryOp, a: f64, b: f64) -> f64 {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div if b == 0.0 => f64::NAN,
        BinaryOp::Div => a / b,
        _ => f64::NAN,
    }
}

/// Arithmetic between series: a number applies to every series; otherwise series with the same
/// labels (ignoring `__name__`) are combined, and series without a partner are dropped.
pub(super) fn combine(
    op: BinaryOp,
    left: Vec<Series>,
    right: Vec<Series>,
    left_scalar: bool,
    right_scalar: bool,
) -> Vec<Series> {
    let zip = |a: &[f64], b: &[f64]| -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| apply(op, *x, *y)).collect()
    };
    if right_scalar {
        let Some(s) = right.first() else { return left };
        return left
            .into_iter()
            .map(|mut l| {
                l.values = zip(&l.values, &s.values);
                l
            })
            .collect();
    }
    if left_scalar {
        let Some(s) = left.first() else { return right };
        return right
            .into_iter()
            .map(|mut r| {
                r.values = zip(&s.values, &r.values);
                r
            })
            .collect();
    }
    let strip = |labels: &Labels| -> Labels {
        labels
            .iter()
            .filter(|(k, _)| k != "__name__")
            .cloned()
            .collect()
    };
    let mut out = Vec::new();
    for l in &left {
        let key = strip(&l.labels);
        if let Some(r) = right.iter().find(|r| strip(&r.labels) == key) {
            // Counting intervals without spans are 0 on both sides of `a / b`: no value.
            out.push(Series {
                labels: key,
                values: zip(&l.values, &r.values),
                exemplars: l.exemplars.clone(),
            });
        }
    }
    out
}

pub(super) fn second_stage(
    stage: &crate::ast::SecondStage,
    mut series: Vec<Series>,
    n: usize,
) -> Vec<Series> {
    use crate::ast::SecondStage;
    match stage {
        SecondStage::Filter { op, value } => {
            for s in &mut series {
                for v in &mut s.values {
                    let keep = !v.is_nan()
                        && match op {
                            BinaryOp::Eq => *v == *value,
                            BinaryOp::NotEq => *v != *value,
                            BinaryOp::Gt => *v > *value,
                            BinaryOp::Gte => *v >= *value,
                            BinaryOp::Lt => *v < *value,
                            _ => *v <= *value,
                        };
                    if !keep {
                        *v = f64::NAN;
                    }
                }
            }
            series.retain(|s| s.values.iter().any(|v| !v.is_nan()));
            series
        }
        SecondStage::TopK(k) | SecondStage::BottomK(k) => {
            let k = *k as usize;
            if series.len() <= k {
                return series;
            }
            let top = matches!(stage, SecondStage::TopK(_));
            // At each interval, the k largest (smallest) values keep their place.
            let mut keep = vec![vec![false; n]; series.len()];
            #[allow(clippy::needless_range_loop)] // i indexes every series' values too
            for i in 0..n {
                let mut ranked: Vec<usize> = (0..series.len())
                    .filter(|&s| series[s].values.get(i).is_some_and(|v| !v.is_nan()))
                    .collect();
                ranked.sort_by(|&a, &b| {
                    let ord = series[a].values[i].total_cmp(&series[b].values[i]);
                    let ord = if top { ord.reverse() } else { ord };
                    // Ties go to the smaller labels: series come from hash maps, and without
                    // this the same query over the same data could keep other series.
                    ord.then_with(|| {
                        format!("{:?}", series[a].labels).cmp(&format!("{:?}", series[b].labels))
                    })
                });
                for &s in ranked.iter().take(k) {
                    keep[s][i] = true;
                }
            }
            for (s, keep) in series.iter_mut().zip(keep) {
                for (v, k) in s.values.iter_mut().zip(keep) {
                    if !k {
                        *v = f64::NAN;
                    }
                }
            }
            series.retain(|s| s.values.iter().any(|v| !v.is_nan()));
            series
        }
    }
}
