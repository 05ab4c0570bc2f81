//! The model description of configs (generality.md section 4.2): `layers` is a list of
//! one-line tables with a `kind`; `[model.blocks]` names sub-lists; a `block` entry inlines
//! one (`repeat` times, `with` its `$`-parameters), a `residual` entry computes
//! `then(block(x) + shortcut(x))`. Expansion turns that into a tree of [`NodeSpec`]s with a
//! path per layer (`3.basic.1.conv2d`, or the `name` given), checking every reference
//! (unknown blocks, cycles, unset `$`-parameters) before any shape is known.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::kinds::{KINDS, LayerSpec};
use super::layer::NormMode;

/// A residual's shortcut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shortcut {
    /// x itself (the block must keep the shape).
    #[default]
    Identity,
    /// A 1×1 conv (images) or linear map (vectors) to the block's output shape, no bias.
    Projection,
}

/// One expanded node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeSpec {
    /// A layer.
    Layer(LayerEntry),
    /// then(body(x) + shortcut(x)).
    Residual {
        /// The residual's path.
        path: String,
        /// The block.
        body: Vec<NodeSpec>,
        /// Identity or projection.
        shortcut: Shortcut,
        /// A parameter-free layer applied to the sum, if any.
        then: Option<LayerEntry>,
    },
}

/// One layer with its path and norm mode.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerEntry {
    /// Dot-separated path (safetensors names, `freeze`, messages).
    pub path: String,
    /// What to build.
    pub spec: LayerSpec,
    /// Per-example norm mode (`norm = "auto" | "ghost" | "instantiate"`).
    pub norm: NormMode,
}

/// An error in a model description: the layer path and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    /// The layer's path (or the block's).
    pub path: String,
    /// What is wrong, and the fix.
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "layer `{}`: {}", self.path, self.message)
    }
}

type Spec<T> = std::result::Result<T, SpecError>;

fn fail<T>(path: &str, message: impl Into<String>) -> Spec<T> {
    Err(SpecError {
        path: path.to_string(),
        message: message.into(),
    })
}

/// Expands `layers` with `blocks`; `globals` are `$`-parameters every layer may use
/// (`$classes`).
pub fn expand(
    layers: &[toml::Table],
    blocks: &BTreeMap<String, Vec<toml::Table>>,
    globals: &toml::Table,
) -> Spec<Vec<NodeSpec>> {
    let mut stack = Vec::new();
    expand_list(layers, "", globals, blocks, &mut stack)
}

fn join(prefix: &str, segment: &str) -> String {
    match prefix {
        "" => segment.to_string(),
        _ => format!("{prefix}.{segment}"),
    }
}

/// Replaces every string `"$name"` (whole value) in `value` by `with[name]`.
fn substitute(value: &toml::Value, with: &toml::Table, path: &str) -> Spec<toml::Value> {
    Ok(match value {
        toml::Value::String(s) if s.starts_with('$') => match with.get(&s[1..]) {
            Some(v) => v.clone(),
            None => {
                let known: Vec<String> = with.keys().map(|k| format!("${k}")).collect();
                return fail(
                    path,
                    format!(
                        "`{s}` is not set (set it in the block's `with`; known here: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        },
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), substitute(v, with, path)?)))
                .collect::<Spec<_>>()?,
        ),
        toml::Value::Array(a) => toml::Value::Array(
            a.iter()
                .map(|v| substitute(v, with, path))
                .collect::<Spec<_>>()?,
        ),
        other => other.clone(),
    })
}

fn take_string(table: &mut toml::Table, key: &str, path: &str) -> Spec<Option<String>> {
    match table.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(other) => fail(path, format!("`{key}` must be a string, got {other}")),
    }
}

fn take_count(table: &mut toml::Table, key: &str, path: &str) -> Spec<usize> {
    match table.remove(key) {
        None => Ok(1),
        Some(toml::Value::Integer(n)) if n >= 1 => Ok(n as usize),
        Some(other) => fail(
            path,
            format!("`{key}` must be a whole number ≥ 1, got {other}"),
        ),
    }
}

fn expand_list(
    list: &[toml::Table],
    prefix: &str,
    with: &toml::Table,
    blocks: &BTreeMap<String, Vec<toml::Table>>,
    stack: &mut Vec<String>,
) -> Spec<Vec<NodeSpec>> {
    let mut nodes = Vec::new();
    for (index, raw) in list.iter().enumerate() {
        let here = join(prefix, &index.to_string());
        let mut table = match substitute(&toml::Value::Table(raw.clone()), with, &here)? {
            toml::Value::Table(t) => t,
            _ => unreachable!("a table substitutes to a table"),
        };
        let Some(kind) = take_string(&mut table, "kind", &here)? else {
            return fail(&here, format!("no `kind` (one of: {})", KINDS.join(", ")));
        };
        let name = take_string(&mut table, "name", &here)?;
        match kind.as_str() {
            "block" | "residual" => {
                let Some(block) = take_string(&mut table, "block", &here)? else {
                    return fail(&here, format!("a {kind} needs `block = \"<name>\"`"));
                };
                let segment = name.unwrap_or_else(|| format!("{index}.{block}"));
                let path = join(prefix, &segment);
                let repeat = take_count(&mut table, "repeat", &path)?;
                let inner = match table.remove("with") {
                    None => toml::Table::new(),
                    Some(toml::Value::Table(t)) => t,
                    Some(other) => {
                        return fail(&path, format!("`with` must be a table, got {other}"));
                    }
                };
                // Globals stay visible inside blocks unless `with` overrides them.
                let mut scope = with.clone();
                scope.extend(inner);
                let (shortcut, then) = if kind == "residual" {
                    let shortcut = match take_string(&mut table, "shortcut", &path)?.as_deref() {
                        None | Some("identity") => Shortcut::Identity,
                        Some("projection") => Shortcut::Projection,
                        Some(other) => {
                            return fail(
                                &path,
                                format!("shortcut = {other:?}: \"identity\" or \"projection\""),
                            );
                        }
                    };
                    (shortcut, take_string(&mut table, "then", &path)?)
                } else {
                    (Shortcut::Identity, None)
                };
                if let Some(extra) = table.keys().next() {
                    return fail(&path, format!("unknown field `{extra}` of a {kind}"));
                }
                let Some(body) = blocks.get(&block) else {
                    let known: Vec<&String> = blocks.keys().collect();
                    return fail(
                        &path,
                        format!("no block `{block}` in [model.blocks] (defined: {known:?})"),
                    );
                };
                if stack.contains(&block) {
                    let mut cycle = stack.clone();
                    cycle.push(block);
                    return fail(&path, format!("blocks form a cycle: {}", cycle.join(" → ")));
                }
                stack.push(block.clone());
                for r in 0..repeat {
                    let path = match repeat {
                        1 => path.clone(),
                        _ => format!("{path}.{r}"),
                    };
                    let inner = expand_list(body, &path, &scope, blocks, stack)?;
                    if kind == "block" {
                        nodes.extend(inner);
                        continue;
                    }
                    let then = match &then {
                        None => None,
                        Some(then_kind) => {
                            let then_path = join(&path, then_kind);
                            let spec = parse_layer(then_kind, toml::Table::new(), &then_path)?;
                            Some(LayerEntry {
                                path: then_path,
                                spec,
                                norm: NormMode::Auto,
                            })
                        }
                    };
                    nodes.push(NodeSpec::Residual {
                        path,
                        body: inner,
                        shortcut,
                        then,
                    });
                }
                stack.pop();
            }
            _ => {
                let path = join(prefix, &name.unwrap_or_else(|| format!("{index}.{kind}")));
                let norm = match take_string(&mut table, "norm", &path)?.as_deref() {
                    None | Some("auto") => NormMode::Auto,
                    Some("ghost") => NormMode::Ghost,
                    Some("instantiate") => NormMode::Instantiate,
                    Some(other) => {
                        return fail(
                            &path,
                            format!("norm = {other:?}: \"auto\", \"ghost\" or \"instantiate\""),
                        );
                    }
                };
                let spec = parse_layer(&kind, table, &path)?;
                nodes.push(NodeSpec::Layer(LayerEntry { path, spec, norm }));
            }
        }
    }
    Ok(nodes)
}

fn parse_layer(kind: &str, mut fields: toml::Table, path: &str) -> Spec<LayerSpec> {
    if !KINDS.contains(&kind) && kind != "batch_norm" {
        return fail(
            path,
            format!("unknown kind `{kind}` (known: {})", KINDS.join(", ")),
        );
    }
    if kind == "batch_norm" {
        // Refused when built, with the fix for its channel count; its fields do not matter.
        return Ok(LayerSpec::BatchNorm {});
    }
    fields.insert("kind".into(), toml::Value::String(kind.into()));
    toml::Value::Table(fields)
        .try_into::<LayerSpec>()
        .or_else(|e| fail(path, format!("{kind}: {}", e.message().trim())))
}

/// Every layer path of an expanded model, in forward order.
pub fn layer_paths(nodes: &[NodeSpec]) -> Vec<String> {
    let mut paths = Vec::new();
    for node in nodes {
        match node {
            NodeSpec::Layer(entry) => paths.push(entry.path.clone()),
            NodeSpec::Residual { body, then, .. } => {
                paths.extend(layer_paths(body));
                if let Some(then) = then {
                    paths.push(then.path.clone());
                }
            }
        }
    }
    paths
}

/// The line of the config text that a layer path comes from, when it can be found: the
/// entry of `[model] layers` (inline tables or `[[model.layers]]`) that the path names,
/// followed into `[model.blocks]` for a path inside a block or residual (a residual's
/// `shortcut` and `then` are on its own entry's line), else the `model.freeze` entry that
/// names the path. Paths are formed as [`expand`] forms them (`3.basic.1.conv2d`, or a
/// `name`). Configs with a shipped `kind` have no layer lines: None.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let model = root.get_ref().get("model")?.get_ref().as_table()?;
    let line =
        |span: std::ops::Range<usize>| text[..span.start.min(text.len())].matches('\n').count() + 1;
    let found = model
        .get("layers")
        .and_then(|layers| layers.get_ref().as_array())
        .and_then(|layers| {
            let blocks = model.get("blocks").and_then(|b| b.get_ref().as_table());
            locate_in(layers, "", path, blocks, 0)
        });
    if let Some(span) = found {
        return Some(line(span));
    }
    let freeze = model.get("freeze")?.get_ref().as_array()?;
    freeze
        .iter()
        .find(|entry| matches!(entry.get_ref(), DeValue::String(s) if s == path))
        .map(|entry| line(entry.span()))
}

/// The span of the entry of `list` (under `prefix`) that `path` comes from.
fn locate_in(
    list: &[toml::Spanned<toml::de::DeValue<'_>>],
    prefix: &str,
    path: &str,
    blocks: Option<&toml::de::DeTable<'_>>,
    depth: usize,
) -> Option<std::ops::Range<usize>> {
    // A cycle is refused by `expand`; stop following one here too.
    if depth > 32 {
        return None;
    }
    for (index, entry) in list.iter().enumerate() {
        let Some(table) = entry.get_ref().as_table() else {
            continue;
        };
        let text = |key: &str| table.get(key).and_then(|v| v.get_ref().as_str());
        let kind = text("kind").unwrap_or("");
        let own = match (text("name"), kind, text("block")) {
            (Some(name), _, _) => join(prefix, name),
            (None, "block" | "residual", Some(block)) => join(prefix, &format!("{index}.{block}")),
            (None, _, _) => join(prefix, &format!("{index}.{kind}")),
        };
        if path == own {
            return Some(entry.span());
        }
        let Some(rest) = path.strip_prefix(&format!("{own}.")) else {
            continue;
        };
        if !matches!(kind, "block" | "residual") {
            continue;
        }
        // Inside the block: the repeat's index (when repeated), then the block's entries.
        let repeat = table
            .get("repeat")
            .and_then(|v| v.get_ref().as_integer())
            .and_then(|n| n.as_str().parse::<usize>().ok())
            .unwrap_or(1);
        let inner_prefix = match repeat {
            1 => own.clone(),
            _ => match rest.split('.').next() {
                Some(r) if r.parse::<usize>().is_ok_and(|r| r < repeat) => format!("{own}.{r}"),
                _ => return Some(entry.span()),
            },
        };
        let body = text("block")
            .and_then(|b| blocks?.get(b))
            .and_then(|b| b.get_ref().as_array());
        return Some(
            body.and_then(|body| locate_in(body, &inner_prefix, path, blocks, depth + 1))
                .unwrap_or(entry.span()),
        );
    }
    None
}
