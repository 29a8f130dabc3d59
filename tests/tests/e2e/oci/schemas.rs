//! The rendered manifests against the schemas a cluster enforces
//! (`deploy/check-schemas.py`, `make check-deploy`): the CRDs of Istio and
//! Envoy Gateway in `../shared/schemas` and Kubernetes' own, strict about
//! unknown fields; and the check refuses a manifest those schemas refuse.
//!
//! Needs the check's venv (`target/check-venv`, pinned packages), which
//! `make check-deploy` and `make test` create.

use super::*;

fn check_python() -> PathBuf {
    let python = root().join("target/check-venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: `make target/check-venv/.installed` (or make check-deploy, make test) creates it",
        python.display()
    );
    python
}

fn schemas_dir() -> PathBuf {
    let dir = root().join("../shared/schemas");
    assert!(
        dir.is_dir(),
        "{} is missing: the CRD schemas sit in shared/ beside the clone",
        dir.display()
    );
    dir
}

/// deploy/check-schemas.py on `paths` with `schemas`: (exit code, stdout,
/// stderr).
fn check(schemas: &Path, paths: &[&Path]) -> (i32, String, String) {
    let out = Command::new(check_python())
        .arg(root().join("deploy/check-schemas.py"))
        .arg("--schemas")
        .arg(schemas)
        .args(paths)
        .output()
        .expect("deploy/check-schemas.py failed to start");
    (
        out.status
            .code()
            .expect("check-schemas.py killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_rendered_manifest_passes_the_crd_and_kubernetes_schemas() {
    let image = Image::build("schemas");
    let (code, stdout, stderr) = check(&schemas_dir(), &[&image.dir.join("deploy")]);
    assert_eq!(code, 0, "check-schemas refused:\n{stdout}{stderr}");
    let count = |kind: &str| -> u32 {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix("check-schemas: "))
            .filter(|l| l.split(' ').nth(2) == Some(kind))
            .map(|l| l.split(' ').next().unwrap().parse::<u32>().unwrap())
            .sum()
    };
    for (kind, want) in [
        ("WasmPlugin", 1),
        ("EnvoyExtensionPolicy", 2),
        ("EnvoyProxy", 1),
        ("Deployment", 1),
        ("Service", 1),
        ("ConfigMap", 1),
    ] {
        assert_eq!(count(kind), want, "valid {kind} documents in:\n{stdout}");
    }
    assert!(
        stdout.contains("check-schemas: 7 valid, 0 invalid, in 6 files"),
        "{stdout}"
    );
}

#[test]
fn a_manifest_its_schema_refuses_fails_the_check() {
    let image = Image::build("schemas-bad");
    let rendered = image.dir.join("deploy");
    let schemas = schemas_dir();
    // (file, text replaced, by what, the path the error must name).
    let cases = [
        (
            "istio/wasmplugin.yaml",
            "pluginName:",
            "pluginNmae:",
            "spec: Additional properties are not allowed ('pluginNmae'",
        ),
        (
            "istio/wasmplugin.yaml",
            "failStrategy: FAIL_CLOSE",
            "failStrategy: FAIL_CLOSED",
            "spec.failStrategy: 'FAIL_CLOSED' is not one of",
        ),
        (
            "istio/wasmplugin.yaml",
            "apiVersion: extensions.istio.io/v1alpha1",
            "apiVersion: extensions.istio.io/v1beta9",
            "has no CRD WasmPlugin of version extensions.istio.io/v1beta9",
        ),
        (
            "envoy-gateway/envoyextensionpolicy-oci.yaml",
            "failOpen: false",
            "failOpen: \"false\"",
            "spec.wasm.0.failOpen: 'false' is not of type 'boolean'",
        ),
        (
            "envoy-gateway/envoyextensionpolicy-http.yaml",
            "  name: jwt-proxy-http",
            "  name: jwt-proxy-http\n  labelz: {}",
            "metadata: Additional properties are not allowed ('labelz'",
        ),
        (
            "envoy-gateway/envoyproxy.yaml",
            "type: Kubernetes",
            "type: Kubernetes\n    kubernetes_: {}",
            "spec.provider: Additional properties are not allowed ('kubernetes_'",
        ),
        (
            "kubernetes/deployment.yaml",
            "replicas: 2",
            "replicas: two",
            "Deployment (apps/v1) against Kubernetes 1.35: spec.replicas:",
        ),
        (
            "kubernetes/deployment.yaml",
            "        readinessProbe:",
            "        readinesProbe:",
            "spec.template.spec.containers.0: Additional properties are not allowed ('readinesProbe'",
        ),
        (
            "kubernetes/configmap.yaml",
            "name: jwt-proxy-envoy",
            "name: jwt_proxy_envoy",
            "metadata.name: not a DNS subdomain",
        ),
    ];
    for (i, (file, from, to, want)) in cases.iter().enumerate() {
        let text = std::fs::read_to_string(rendered.join(file)).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        let broken = image.dir.join(format!("broken-{i}.yaml"));
        std::fs::write(&broken, text.replacen(from, to, 1)).unwrap();
        let (code, stdout, stderr) = check(&schemas, &[&broken]);
        assert_eq!(code, 1, "{file} with {to:?} passed:\n{stdout}{stderr}");
        assert!(
            stderr.contains(want),
            "{file} with {to:?}: no {want:?} in:\n{stderr}"
        );
        assert!(stdout.contains(" 1 invalid,"), "{stdout}");
    }

    // No schemas: an error, never a skip.
    let (code, _, stderr) = check(&image.dir.join("no-schemas"), &[&rendered]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no schemas directory"), "{stderr}");
    // Nothing validated: an error.
    let empty = image.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, _, stderr) = check(&schemas, &[&empty]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("validated no document"), "{stderr}");
}
