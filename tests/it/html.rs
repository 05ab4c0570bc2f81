//! report.html in headless Chromium (Debian's `chromium`, installed by
//! scripts/test-deps.sh): the pages of the shipped quickstart, cnn, Adult, sweep and
//! federated examples are rebuilt by `dptrain report`, read back through Chromium's DOM and photographed. The
//! text must carry the title, the accuracy, the ε and every plot's title; the page must
//! reference nothing outside itself. Screenshots are kept in the target directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium's output for `args` on `page`, within 90 s; the test fails if Chromium is
/// missing (scripts/test-deps.sh installs it) or fails.
fn chromium(args: &[&str], page: &Path) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        // Any network request would go to a closed port of 127.0.0.1.
        .args(["--proxy-server=127.0.0.1:9", "--no-first-run"])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("chromium: {e} (Debian's package `chromium`: scripts/test-deps.sh)")
        });
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s on {}", page.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "chromium {args:?} failed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The visible text of a DOM dump: tags dropped, entities of the page's escapes decoded,
/// whitespace collapsed.
fn text_of(dom: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    let without_style = match (dom.find("<style>"), dom.find("</style>")) {
        (Some(a), Some(b)) => format!("{}{}", &dom[..a], &dom[b..]),
        _ => dom.to_string(),
    };
    for c in without_style.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn the_html_reports_of_the_shipped_examples_show_their_figures_in_chromium() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    let scratch = std::env::temp_dir().join(format!("dptrain-html-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&shots).unwrap();
    // (example, the texts its page must show).
    let examples: [(&str, Vec<&str>); 5] = [
        (
            "quickstart",
            vec![
                "dptrain run: quickstart",
                "test accuracy 92.69%",
                "ε = 3.0000 at δ = 1e-5 (RDP accountant)",
                "quickstart: privacy spent (δ = 1e-5)",
                "quickstart: test accuracy",
                "quickstart: loss",
                "Privacy statement: quickstart",
            ],
        ),
        (
            "mnist-cnn-eps3",
            vec![
                "dptrain run: mnist-cnn-eps3",
                "test accuracy 98.19%",
                "ε = 3.0000 at δ = 1e-5 (RDP accountant)",
                "mnist-cnn-eps3: privacy spent (δ = 1e-5)",
                "mnist-cnn-eps3: test accuracy",
                "mnist-cnn-eps3: loss",
            ],
        ),
        (
            "adult-logreg-eps1",
            vec![
                "dptrain run: adult-logreg-eps1",
                "test accuracy 85.84%",
                "test AUC 0.9106",
                "ε = 1.0000 at δ = 1e-5 (RDP accountant)",
                "adult-logreg-eps1: privacy spent (δ = 1e-5)",
                "adult-logreg-eps1: test accuracy",
                "adult-logreg-eps1: loss",
            ],
        ),
        (
            "sweep-mlp",
            vec![
                // Its runs' folders are gone: the sweep is named after its own folder.
                "dptrain sweep: sweep-mlp: privacy/utility trade-off over privacy.target_epsilon",
                "privacy.target_epsilon = 0.5 0.500 1e-5 90.89%",
                "privacy.target_epsilon = 8 8.000 1e-5 92.96%",
                "non-private - - 98.26%",
            ],
        ),
        (
            "federated-mnist-he",
            vec![
                "dptrain federated run: federated-mnist-he",
                "test accuracy 83.27%",
                "ε = 1.7129 at δ = 1e-5 for one client's whole data (RDP accountant)",
                "federated-mnist-he: test accuracy",
                "federated-mnist-he: privacy spent",
            ],
        ),
    ];
    for (example, expected) in &examples {
        let dir = scratch.join(example);
        copy_dir(&repo.join("reports/examples").join(example), &dir);
        let _ = std::fs::remove_file(dir.join("report.html"));
        let run = Command::new(env!("CARGO_BIN_EXE_dptrain"))
            .current_dir(repo)
            .arg("report")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let page = dir.join("report.html");
        let html = std::fs::read_to_string(&page).unwrap();
        // One file: nothing fetched from elsewhere.
        for outside in ["src=", "href=", "url(", "@import", "<link", "<script"] {
            assert!(!html.contains(outside), "{example}: the page has {outside}");
        }
        // Every plot of the folder is in the page, as inline SVG.
        let svgs = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let path = e.as_ref().unwrap().path();
                path.extension().is_some_and(|x| x == "svg")
            })
            .count();
        assert!(svgs >= 1, "{example}: no plots");
        assert_eq!(html.matches("<svg").count(), svgs, "{example}");
        let text = text_of(&chromium(&["--dump-dom"], &page));
        for part in expected {
            assert!(
                text.contains(part),
                "{example}: the page lacks `{part}`:\n{text}"
            );
        }
        let shot = shots.join(format!("{example}.png"));
        let _ = std::fs::remove_file(&shot);
        chromium(
            &[
                "--window-size=1000,3000",
                &format!("--screenshot={}", shot.display()),
            ],
            &page,
        );
        let png = std::fs::read(&shot).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{example}");
        assert!(png.len() > 30_000, "{example}: a blank screenshot?");
    }
    let _ = std::fs::remove_dir_all(&scratch);
}
