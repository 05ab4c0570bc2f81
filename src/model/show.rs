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

    /// [`Model::table`] as aligned text, with totals.
    pub fn show(&self) -> String {
        let rows = self.table();
        let header = [
            "path",
            "kind",
            "output",
            "params",
            "per-example rule",
            "MACs",
        ];
        let cells: Vec<[String; 6]> = rows
            .iter()
            .map(|r| {
                [
                    r.path.clone(),
                    r.kind.clone(),
                    format!("{:?}", r.output),
                    r.parameters.to_string(),
                    r.rule.clone(),
                    r.macs.to_string(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: &[String]| {
            row.iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut out = vec![line(&header.map(String::from))];
        out.extend(cells.iter().map(|r| line(r)));
        let params: usize = rows.iter().map(|r| r.parameters).sum();
        let macs: usize = rows.iter().map(|r| r.macs).sum();
        out.push(format!(
            "input {:?}; {} layers; {params} parameters ({} trainable); {macs} multiply-adds per example",
            self.input_shape,
            rows.len(),
            self.parameter_count()
        ));
        out.join("\n") + "\n"
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
