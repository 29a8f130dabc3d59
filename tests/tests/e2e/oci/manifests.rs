//! The `deploy/` manifests: each parses (with PyYAML) and has the fields its
//! engine requires, and the rendered copies carry the digest `make oci`
//! printed.

use super::*;

/// A Python with PyYAML: an independent YAML parser for the manifests.
fn python_yaml() -> PathBuf {
    for p in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(p)
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return PathBuf::from(p);
        }
    }
    panic!("no python3 with PyYAML: apt-get install python3-yaml (or pip install PyYAML)")
}

/// Every YAML document in `path`, as JSON.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = run(Command::new(python_yaml()).arg("-c").arg(
        "import json, sys, yaml\njson.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
    ).arg(path));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What each manifest must carry: (file, kind, [(JSON pointer, expected
/// value or `None` for "present"), ...], where the requirement comes from).
type Rule = (
    &'static str,
    &'static str,
    &'static [(&'static str, Option<&'static str>)],
    &'static str,
);

const RULES: &[Rule] = &[
    (
        "istio/wasmplugin.yaml",
        "WasmPlugin",
        &[
            ("/apiVersion", Some("extensions.istio.io/v1alpha1")),
            ("/metadata/name", None),
            // `url` is the one field the API marks required.
            ("/spec/url", None),
            ("/spec/sha256", None),
            ("/spec/imagePullPolicy", Some("IfNotPresent")),
            ("/spec/type", Some("HTTP")),
            ("/spec/pluginName", Some("jwt_proxy")),
            // Fail closed (FAIL_CLOSE is the API's default; set explicitly).
            ("/spec/failStrategy", Some("FAIL_CLOSE")),
            ("/spec/selector/matchLabels/istio", Some("ingressgateway")),
            ("/spec/pluginConfig/secret_env", Some("JWT_SECRET")),
            ("/spec/vmConfig/env/0/name", Some("JWT_SECRET")),
            ("/spec/vmConfig/env/0/valueFrom", Some("HOST")),
        ],
        "Istio WasmPlugin API, istio/api extensions/v1alpha1/wasm.proto (istio.io/latest/docs/reference/config/proxy_extensions/wasm-plugin/)",
    ),
    (
        "envoy-gateway/envoyextensionpolicy-oci.yaml",
        "EnvoyExtensionPolicy",
        &[
            ("/apiVersion", Some("gateway.envoyproxy.io/v1alpha1")),
            ("/metadata/name", None),
            // One of targetRef / targetRefs / targetSelectors (CEL rule).
            (
                "/spec/targetRefs/0/group",
                Some("gateway.networking.k8s.io"),
            ),
            ("/spec/targetRefs/0/kind", Some("HTTPRoute")),
            ("/spec/targetRefs/0/name", None),
            // code.type required; type Image requires code.image.url.
            ("/spec/wasm/0/code/type", Some("Image")),
            ("/spec/wasm/0/code/image/url", None),
            ("/spec/wasm/0/code/image/sha256", None),
            ("/spec/wasm/0/rootID", Some("jwt_proxy")),
            ("/spec/wasm/0/config/secret_env", Some("JWT_SECRET")),
            ("/spec/wasm/0/env/hostKeys/0", Some("JWT_SECRET")),
        ],
        "Envoy Gateway v1.9.0 API, api/v1alpha1/wasm_types.go and envoyextensionypolicy_types.go",
    ),
    (
        "envoy-gateway/envoyextensionpolicy-http.yaml",
        "EnvoyExtensionPolicy",
        &[
            ("/apiVersion", Some("gateway.envoyproxy.io/v1alpha1")),
            ("/metadata/name", None),
            (
                "/spec/targetRefs/0/group",
                Some("gateway.networking.k8s.io"),
            ),
            ("/spec/targetRefs/0/kind", Some("HTTPRoute")),
            ("/spec/targetRefs/0/name", None),
            // type HTTP requires code.http.url.
            ("/spec/wasm/0/code/type", Some("HTTP")),
            ("/spec/wasm/0/code/http/url", None),
            ("/spec/wasm/0/code/http/sha256", None),
            ("/spec/wasm/0/rootID", Some("jwt_proxy")),
            ("/spec/wasm/0/config/secret_env", Some("JWT_SECRET")),
            ("/spec/wasm/0/env/hostKeys/0", Some("JWT_SECRET")),
        ],
        "Envoy Gateway v1.9.0 API, api/v1alpha1/wasm_types.go and envoyextensionypolicy_types.go",
    ),
    (
        "envoy-gateway/envoyproxy.yaml",
        "EnvoyProxy",
        &[
            ("/apiVersion", Some("gateway.envoyproxy.io/v1alpha1")),
            ("/metadata/name", None),
            // provider.type is required.
            ("/spec/provider/type", Some("Kubernetes")),
            (
                "/spec/provider/kubernetes/envoyDeployment/container/env/0/name",
                Some("JWT_SECRET"),
            ),
            (
                "/spec/provider/kubernetes/envoyDeployment/container/env/0/valueFrom/secretKeyRef/key",
                Some("JWT_SECRET"),
            ),
        ],
        "Envoy Gateway v1.9.0 API, api/v1alpha1/envoyproxy_types.go and shared_types.go",
    ),
    (
        "kubernetes/deployment.yaml",
        "Deployment",
        &[
            ("/apiVersion", Some("apps/v1")),
            ("/metadata/name", Some("jwt-proxy")),
            // spec.selector and spec.template are required; the template's
            // labels must match the selector.
            ("/spec/selector/matchLabels/app", Some("jwt-proxy")),
            ("/spec/template/metadata/labels/app", Some("jwt-proxy")),
            ("/spec/template/spec/containers/0/name", Some("envoy")),
            ("/spec/template/spec/containers/0/image", None),
            (
                "/spec/template/spec/containers/0/env/0/name",
                Some("JWT_SECRET"),
            ),
            (
                "/spec/template/spec/containers/0/env/0/valueFrom/secretKeyRef/key",
                Some("JWT_SECRET"),
            ),
            (
                "/spec/template/spec/volumes/0/configMap/name",
                Some("jwt-proxy-envoy"),
            ),
            // ImageVolumeSource.reference.
            ("/spec/template/spec/volumes/1/image/reference", None),
        ],
        "Kubernetes 1.35 API reference, Deployment (apps/v1) and ImageVolumeSource",
    ),
    (
        "kubernetes/configmap.yaml",
        "ConfigMap",
        &[
            ("/apiVersion", Some("v1")),
            ("/metadata/name", Some("jwt-proxy-envoy")),
            ("/data/envoy.yaml", None),
        ],
        "Kubernetes 1.35 API reference, ConfigMap (v1)",
    ),
];

fn check_rules(dir: &Path) -> BTreeMap<&'static str, Vec<Value>> {
    let mut docs = BTreeMap::new();
    for (file, kind, fields, source) in RULES {
        let parsed = yaml_docs(&dir.join(file));
        let doc = parsed
            .iter()
            .find(|d| d["kind"] == *kind)
            .unwrap_or_else(|| panic!("{file}: no {kind} document"));
        for (pointer, want) in *fields {
            let got = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{file}: {kind} has no {pointer} ({source})"));
            assert!(!got.is_null(), "{file}: {pointer} is null ({source})");
            if let Some(want) = want {
                assert_eq!(got, want, "{file}: {pointer} ({source})");
            }
        }
        docs.insert(*file, parsed);
    }
    docs
}

#[test]
fn every_deploy_manifest_parses_and_has_the_fields_its_engine_requires() {
    let deploy = root().join("deploy");
    // Every manifest is in RULES, so a new one needs its rules.
    let mut files = Vec::new();
    for engine in std::fs::read_dir(&deploy).unwrap() {
        let engine = engine.unwrap().path();
        if engine.is_dir() {
            for f in std::fs::read_dir(&engine).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "yaml") {
                    files.push(f.strip_prefix(&deploy).unwrap().display().to_string());
                }
            }
        }
    }
    files.sort();
    let mut ruled: Vec<String> = RULES.iter().map(|r| r.0.to_owned()).collect();
    ruled.sort();
    assert_eq!(files, ruled, "deploy/ manifests and the RULES list differ");
    let docs = check_rules(&deploy);
    // The fail-closed settings each engine offers: Envoy Gateway's failOpen.
    for f in [
        "envoy-gateway/envoyextensionpolicy-oci.yaml",
        "envoy-gateway/envoyextensionpolicy-http.yaml",
    ] {
        assert_eq!(docs[f][0]["spec"]["wasm"][0]["failOpen"], false, "{f}");
    }
    // The Service in front of the Deployment.
    let service = docs["kubernetes/deployment.yaml"]
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("kubernetes/deployment.yaml: no Service");
    assert_eq!(service["spec"]["selector"]["app"], "jwt-proxy");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
}

#[test]
fn the_rendered_manifests_carry_the_digest_make_oci_printed() {
    let image = Image::build("rendered");
    let digest = image.printed_digest.strip_prefix("sha256:").unwrap();
    let module = &image.printed_module;
    let rendered = image.dir.join("deploy");
    let docs = check_rules(&rendered);
    for (file, parsed) in &docs {
        let text = std::fs::read_to_string(rendered.join(file)).unwrap();
        assert!(!text.contains(SECRET), "{file} carries the key");
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            // The Envoy config inside the ConfigMap keeps its own comments.
            assert!(
                !line.contains("${") || file.starts_with("kubernetes/configmap"),
                "{file}: placeholder left: {line}"
            );
        }
        assert!(!parsed.is_empty());
    }
    let first = |f: &str| docs[f][0].clone();
    let istio = first("istio/wasmplugin.yaml");
    assert_eq!(istio["spec"]["url"], format!("oci://{IMAGE}:{TAG}"));
    assert_eq!(istio["spec"]["sha256"], digest);
    let eg = first("envoy-gateway/envoyextensionpolicy-oci.yaml");
    assert_eq!(
        eg["spec"]["wasm"][0]["code"]["image"]["url"],
        format!("{IMAGE}:{TAG}")
    );
    assert_eq!(eg["spec"]["wasm"][0]["code"]["image"]["sha256"], digest);
    let eg_http = first("envoy-gateway/envoyextensionpolicy-http.yaml");
    assert_eq!(
        eg_http["spec"]["wasm"][0]["code"]["http"]["url"],
        "http://wasm.test/plugin.wasm"
    );
    assert_eq!(
        eg_http["spec"]["wasm"][0]["code"]["http"]["sha256"],
        module.as_str()
    );
    let deployment = first("kubernetes/deployment.yaml");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][1]["image"]["reference"],
        format!("{IMAGE}@sha256:{digest}")
    );

    // The ConfigMap carries envoy/envoy.yaml as render.sh renders it with
    // deploy/kubernetes/envoy.env: the same config as `make run`, fail closed.
    let configmap = first("kubernetes/configmap.yaml");
    let envoy_yaml = configmap["data"]["envoy.yaml"].as_str().unwrap();
    let mut render = Command::new("sh");
    render.arg(root().join("envoy/render.sh"));
    for line in std::fs::read_to_string(root().join("deploy/kubernetes/envoy.env"))
        .unwrap()
        .lines()
    {
        let (k, v) = line.split_once('=').unwrap();
        render.env(k, v);
    }
    let expected = run(render.env_remove("WASM_URL")).stdout;
    assert_eq!(envoy_yaml, String::from_utf8(expected).unwrap());
    let envoy_path = image.dir.join("envoy.yaml");
    std::fs::write(&envoy_path, envoy_yaml).unwrap();
    let envoy = &yaml_docs(&envoy_path)[0];
    let wasm_filter =
        envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "jwt_proxy")
            .expect("no jwt_proxy filter in the ConfigMap's envoy.yaml")
            .clone();
    let config = &wasm_filter["typed_config"]["config"];
    assert_eq!(config["failure_policy"], "FAIL_RELOAD");
    assert_eq!(
        config["vm_config"]["code"]["local"]["filename"],
        "/etc/jwt-proxy/filter/plugin.wasm"
    );
    assert_eq!(
        config["vm_config"]["environment_variables"]["host_env_keys"][0],
        "JWT_SECRET"
    );
}
