//! `dptrain model show`: the expanded table of a model (path, kind, output shape,
//! parameters, per-example rule with its mode, multiply-adds of one example's forward).

use super::{Model, Node};

/// One row of [`Model::table`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// Layer path.
    pub path: String,
    /// Kind (`residual` for the sum of a residual).
    pub kind: String,
    /// Shape of one example's output.
    pub output: Vec<usize>,
    /// Scalar parameters.
    pub parameters: usize,
    /// Per-example rule and mode ("frozen", "-" when parameter-free).
    pub rule: String,
    /// Forward multiply-adds per example (an estimate).
    pub macs: usize,
}

impl Model {
    /// The expanded table, input first.
    pub fn table(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        rows_of(&self.nodes, &mut rows);
        rows
    }

    /// [`Model::table`] as (path, the other columns aligned) pairs: a header, one pair
    /// per layer, and the totals.
    pub fn table_pairs(&self) -> Vec<(String, String)> {
        let rows = self.table();
        let cells: Vec<[String; 5]> = rows
            .iter()
            .map(|r| {
                [
                    r.kind.clone(),
                    format!("{:?}", r.output),
                    r.parameters.to_string(),
                    r.rule.clone(),
                    r.macs.to_string(),
                ]
            })
            .collect();
        let header = ["kind", "output", "params", "per-example rule", "MACs"].map(String::from);
        let mut widths = header.clone().map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: &[String; 5]| {
            row.iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut pairs = vec![("path".to_string(), line(&header))];
        pairs.extend(
            rows.iter()
                .zip(&cells)
                .map(|(r, c)| (r.path.clone(), line(c))),
        );
        pairs.push((
            "total".into(),
            format!(
                "{} trainable parameters ({} in all), {} multiply-adds per example, input {:?}, \
                 {}",
                self.parameter_count(),
                rows.iter().map(|r| r.parameters).sum::<usize>(),
                rows.iter().map(|r| r.macs).sum::<usize>(),
                self.input.shape,
                format!("{:?}", self.dtype()).to_lowercase()
            ),
        ));
        pairs
    }

    /// [`Model::table_pairs`] as aligned text.
    pub fn show(&self) -> String {
        let pairs = self.table_pairs();
        let width = pairs
            .iter()
            .map(|(p, _)| p.chars().count())
            .max()
            .unwrap_or(0);
        pairs
            .iter()
            .map(|(path, rest)| format!("{path:<width$}  {rest}\n"))
            .collect()
    }
}

fn rows_of(nodes: &[Node], rows: &mut Vec<Row>) {
    for node in nodes {
        match node {
            Node::Layer(l) => {
                let parameters = l.layer.params().iter().map(|p| p.var.elem_count()).sum();
                let rule = match (parameters, l.frozen) {
                    (0, _) => "-".into(),
                    (_, true) => "frozen".into(),
                    _ => l.layer.rule(l.norm),
                };
                rows.push(Row {
                    path: l.path.clone(),
                    kind: l.layer.kind().into(),
                    output: l.layer.output_shape().to_vec(),
                    parameters,
                    rule,
                    macs: l.layer.macs(),
                });
            }
            Node::Residual(r) => {
                rows_of(&r.body, rows);
                rows_of(&r.shortcut, rows);
                rows.push(Row {
                    path: r.path.clone(),
                    kind: format!(
                        "residual ({})",
                        if r.shortcut.is_empty() {
                            "identity"
                        } else {
                            "projection"
                        }
                    ),
                    output: r.output_shape.clone(),
                    parameters: 0,
                    rule: "-".into(),
                    macs: 0,
                });
                if let Some(then) = &r.then {
                    rows_of(&[Node::Layer(then.clone())], rows);
                }
            }
        }
    }
}
