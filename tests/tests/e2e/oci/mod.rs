//! The OCI image of the module (`make oci`, `deploy/oci.sh`) and the
//! `deploy/` manifests (SPEC section 8): the image layout is valid and is
//! the Wasm image spec's "compat" variant, skopeo reads it, the image and the
//! module are reproducible, and every manifest has the fields its engine
//! requires, with the digest filled into the rendered copies.
//!
//! Needs umoci and skopeo (`apt-get install umoci skopeo`; `.ci/run` installs
//! them) and PyYAML (to parse the manifests with a YAML implementation that
//! is not ours). A missing tool fails the test with how to install it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use jwt_proxy_tests::{SECRET, root, wasm};

use crate::util::run;
use serde_json::Value;

mod manifests;
mod schemas;

const TAG: &str = "e2e";
const IMAGE: &str = "registry.test/jwt-proxy-wasm";

/// A tool on `PATH`; fails (never skips) when it is missing.
fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is missing: apt-get install {package} (.ci/run installs it)")
    })
}

fn sha256_hex(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = root()
        .join("target/e2e")
        .join(format!("oci-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An image `deploy/oci.sh` built from the trimmed module into a scratch
/// directory (removed on drop).
struct Image {
    dir: PathBuf,
    /// `sha256:<hex>`, as oci.sh printed it.
    printed_digest: String,
    /// The module's sha256, as oci.sh printed it.
    printed_module: String,
}

impl Image {
    fn build(name: &str) -> Image {
        tool("umoci", "umoci");
        let dir = scratch(name);
        let out = run(Command::new(root().join("deploy/oci.sh"))
            .env("OCI_DIR", &dir)
            .env("WASM", wasm("jwt_filter"))
            .env("OCI_IMAGE", IMAGE)
            .env("OCI_TAG", TAG)
            .env("WASM_URL", "http://wasm.test/plugin.wasm")
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("JWT_SECRET"));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let printed = |label: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(label))
                .unwrap_or_else(|| panic!("oci.sh printed no {label:?}:\n{stdout}"))
                .trim()
                .to_owned()
        };
        Image {
            printed_digest: printed("oci: image digest"),
            printed_module: printed("oci: module sha256"),
            dir,
        }
    }

    fn layout(&self) -> PathBuf {
        self.dir.join("layout")
    }

    fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("digest {digest:?} is not sha256"));
        self.layout().join("blobs/sha256").join(hex)
    }

    fn json(&self, digest: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.blob(digest)).unwrap()).unwrap()
    }

    /// The manifest's digest from index.json.
    fn manifest_digest(&self) -> String {
        let index: Value =
            serde_json::from_slice(&std::fs::read(self.layout().join("index.json")).unwrap())
                .unwrap();
        index["manifests"][0]["digest"].as_str().unwrap().to_owned()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Checks a descriptor (`mediaType`, `digest`, `size`) against its blob.
fn check_descriptor(image: &Image, d: &Value, media_type: &str) {
    assert_eq!(d["mediaType"], media_type, "descriptor {d}");
    let digest = d["digest"].as_str().unwrap();
    let blob = image.blob(digest);
    let len = std::fs::metadata(&blob)
        .unwrap_or_else(|e| panic!("blob {} missing: {e}", blob.display()))
        .len();
    assert_eq!(d["size"].as_u64(), Some(len), "size of {digest}");
    assert_eq!(format!("sha256:{}", sha256_hex(&blob)), digest);
}

#[test]
fn the_layout_is_a_compat_image_holding_exactly_the_module() {
    let image = Image::build("layout");
    let module = wasm("jwt_filter");
    let module_sha = sha256_hex(&module);
    let layout = image.layout();

    // OCI image layout spec 1.1: oci-layout, index.json, blobs/<alg>/<hex>.
    let oci_layout: Value =
        serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "index.json: {index}");
    check_descriptor(
        &image,
        &manifests[0],
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        TAG
    );

    let manifest = image.json(&image.manifest_digest());
    assert_eq!(manifest["schemaVersion"], 2);
    check_descriptor(
        &image,
        &manifest["config"],
        "application/vnd.oci.image.config.v1+json",
    );
    // Wasm image spec, compat variant: exactly one tar+gzip layer, and the
    // annotation in the manifest.
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "manifest: {manifest}");
    check_descriptor(
        &image,
        &layers[0],
        "application/vnd.oci.image.layer.v1.tar+gzip",
    );
    assert_eq!(
        manifest["annotations"]["module.wasm.image/variant"], "compat",
        "manifest: {manifest}"
    );

    // The config's diff_id is the uncompressed layer's digest.
    let layer = image.blob(layers[0]["digest"].as_str().unwrap());
    let config = image.json(manifest["config"]["digest"].as_str().unwrap());
    let tar = run(Command::new("gzip").arg("-dc").arg(&layer)).stdout;
    let tar_path = image.dir.join("layer.tar");
    std::fs::write(&tar_path, &tar).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([format!("sha256:{}", sha256_hex(&tar_path))])
    );

    // The layer is a complete tar (GNU tar refuses a truncated one) of
    // exactly plugin.wasm, the module byte for byte.
    let listing = run(Command::new("tar").arg("-tvf").arg(&tar_path)).stdout;
    let listing = String::from_utf8(listing).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(names, ["plugin.wasm"], "layer:\n{listing}");
    assert!(listing.starts_with("-rw-r--r-- 0/0"), "layer:\n{listing}");
    let out = image.dir.join("unpacked");
    std::fs::create_dir_all(&out).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&out));
    assert_eq!(sha256_hex(&out.join("plugin.wasm")), module_sha);

    // No blob that nothing refers to, and every blob is named by its digest.
    let blobs: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(blobs.len(), 3, "blobs: {blobs:?}");
    for b in &blobs {
        assert_eq!(&sha256_hex(&layout.join("blobs/sha256").join(b)), b);
    }

    // What oci.sh printed and wrote beside the image.
    assert_eq!(image.printed_digest, image.manifest_digest());
    assert_eq!(image.printed_module, module_sha);
    assert_eq!(
        std::fs::read_to_string(image.dir.join("image.digest")).unwrap(),
        format!("{}\n", image.manifest_digest())
    );
    assert_eq!(
        std::fs::read_to_string(image.dir.join("plugin.wasm.sha256")).unwrap(),
        format!("{module_sha}  plugin.wasm\n")
    );
    assert_eq!(sha256_hex(&image.dir.join("plugin.wasm")), module_sha);
}

#[test]
fn skopeo_reads_the_layout_and_the_tarball() {
    let skopeo = tool("skopeo", "skopeo");
    let image = Image::build("skopeo");
    let reference = format!("oci:{}:{TAG}", image.layout().display());
    let raw = run(Command::new(&skopeo).args(["inspect", "--raw", &reference])).stdout;
    assert_eq!(
        raw,
        std::fs::read(image.blob(&image.manifest_digest())).unwrap()
    );
    for reference in [
        reference.clone(),
        format!(
            "oci-archive:{}:{TAG}",
            image.dir.join("jwt-filter.oci.tar").display()
        ),
    ] {
        let out = run(Command::new(&skopeo).args(["inspect", &reference])).stdout;
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Digest"], image.manifest_digest(), "{reference}: {v}");
        assert_eq!(v["Layers"].as_array().unwrap().len(), 1, "{reference}: {v}");
    }
    // umoci reads it back too.
    let stat = run(Command::new(tool("umoci", "umoci")).args([
        "stat",
        "--image",
        &format!("{}:{TAG}", image.layout().display()),
    ]));
    assert!(String::from_utf8_lossy(&stat.stdout).contains("LAYER"));
}

#[test]
fn the_oci_variant_carries_the_module_as_its_wasm_layer() {
    let skopeo = tool("skopeo", "skopeo");
    let image = Image::build("oci-variant");
    let layout = image.dir.join("layout-oci");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    let desc = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    let blob = |d: &Value| {
        layout
            .join("blobs/sha256")
            .join(&d["digest"].as_str().unwrap()[7..])
    };
    let check = |d: &Value, media_type: &str| {
        assert_eq!(d["mediaType"], media_type, "{d}");
        let path = blob(d);
        assert_eq!(
            d["size"].as_u64(),
            Some(std::fs::metadata(&path).unwrap().len())
        );
        assert_eq!(d["digest"], format!("sha256:{}", sha256_hex(&path)));
    };
    check(desc, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        std::fs::read_to_string(image.dir.join("image-oci.digest")).unwrap(),
        format!("{}\n", desc["digest"].as_str().unwrap())
    );
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob(desc)).unwrap()).unwrap();
    // Wasm image spec, oci variant: a runtime config layer and the module.
    check(
        &manifest["config"],
        "application/vnd.module.wasm.config.v1+json",
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "{manifest}");
    check(&layers[0], "application/vnd.module.wasm.config.v1+json");
    check(
        &layers[1],
        "application/vnd.module.wasm.content.layer.v1+wasm",
    );
    let runtime: Value = serde_json::from_slice(&std::fs::read(blob(&layers[0])).unwrap()).unwrap();
    assert_eq!(runtime["type"], "envoy_proxy");
    assert_eq!(runtime["config"]["root_ids"][0], "jwt_proxy");
    assert_eq!(
        std::fs::read(blob(&layers[1])).unwrap(),
        std::fs::read(wasm("jwt_filter")).unwrap()
    );
    // skopeo reads it and copies it (as a push would) without changing it.
    let reference = format!("oci:{}:{TAG}", layout.display());
    let raw = run(Command::new(&skopeo).args(["inspect", "--raw", &reference])).stdout;
    assert_eq!(raw, std::fs::read(blob(desc)).unwrap());
    let copy = image.dir.join("copied");
    run(Command::new(&skopeo).args([
        "copy",
        "--quiet",
        &reference,
        &format!("oci:{}:{TAG}", copy.display()),
    ]));
    let copied: Value =
        serde_json::from_slice(&std::fs::read(copy.join("index.json")).unwrap()).unwrap();
    assert_eq!(copied["manifests"][0]["digest"], desc["digest"]);
}

#[test]
fn the_image_digest_is_the_same_on_every_build() {
    let a = Image::build("repro-a");
    let b = Image::build("repro-b");
    assert_eq!(a.manifest_digest(), b.manifest_digest());
    assert_eq!(
        std::fs::read_to_string(a.dir.join("image-oci.digest")).unwrap(),
        std::fs::read_to_string(b.dir.join("image-oci.digest")).unwrap()
    );
    assert_eq!(
        sha256_hex(&a.dir.join("jwt-filter.oci.tar")),
        sha256_hex(&b.dir.join("jwt-filter.oci.tar"))
    );
}

/// Builds the filter in `src` (its own target directory beside it) with the
/// flags the Makefile gives that directory, and trims it like `make wasm`.
fn build_module_in(src: &Path) -> Vec<u8> {
    let flags = run(Command::new("make")
        .args(["-s", "--no-print-directory", "-C"])
        .arg(src)
        .arg("wasm-rustflags")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS"))
    .stdout;
    let flags = String::from_utf8(flags).unwrap().trim().to_owned();
    assert!(
        flags.contains(&format!("{}=/build", src.display())),
        "{flags}"
    );
    let target_dir = src.with_file_name("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .current_dir(src)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "-p",
            "jwt-filter",
            "--locked",
            "--offline",
            "--quiet",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS", &flags)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS"));
    let built = std::fs::read(target_dir.join("wasm32-wasip1/release/jwt_filter.wasm")).unwrap();
    trim_exports::trim(&built, &trim_exports::UNUSED_CALLBACKS)
        .unwrap()
        .module
}

/// Copies the workspace's files (as on disk, tracked or not ignored) to `to`.
fn copy_sources(to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let files = run(Command::new("git").current_dir(root()).args([
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
    ]))
    .stdout;
    for f in files.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = Path::new(std::str::from_utf8(f).unwrap());
        let from = root().join(rel);
        if from.is_file() {
            let dest = to.join(rel);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&from, &dest).unwrap();
        }
    }
}

#[test]
fn the_module_is_the_same_when_built_in_another_directory() {
    // One snapshot of the sources, in two directories of different depth and
    // length, each built with the flags the Makefile gives it: the same bytes.
    // (Target directories are kept under target/repro/, so a rerun only
    // rebuilds the workspace crates.)
    let base = root().join("target/repro");
    let a = base.join("a/jwt-proxy-wasm");
    let b = base.join("elsewhere/b/jwt-proxy-wasm");
    copy_sources(&a);
    let _ = std::fs::remove_dir_all(&b);
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    run(Command::new("cp").arg("-a").arg(&a).arg(&b));
    let from_a = build_module_in(&a);
    let from_b = build_module_in(&b);
    assert!(
        from_a == from_b,
        "the module built in {} and in {} differs ({} vs {} bytes): not reproducible",
        a.display(),
        b.display(),
        from_a.len(),
        from_b.len()
    );
    // No path of the build machine is left in it: not the directory, not
    // the cargo home (so another cargo home gives the same bytes too).
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap()));
    for path in [a.display().to_string(), home] {
        assert!(
            !from_a.windows(path.len()).any(|w| w == path.as_bytes()),
            "the module carries the path {path}"
        );
    }
    assert!(
        from_a.windows(7).any(|w| w == b"/cargo/"),
        "no remapped path"
    );
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}
