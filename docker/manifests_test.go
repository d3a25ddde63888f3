package docker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/metership/metership/conf"
	"github.com/metership/metership/engine"
)

// Errors the manifest decoder returns, so tests can tell why a document was
// rejected.
var (
	// errUnknownKind is returned for an apiVersion/kind pair the test has no
	// typed decoder for: every manifest must be checked, so a new kind
	// needs a line in knownKinds.
	errUnknownKind = errors.New("unknown apiVersion/kind")
	// errPartialTypeMeta is returned for a document with apiVersion but no
	// kind, or the reverse: a Kubernetes manifest with a typo in one of them.
	errPartialTypeMeta = errors.New("document has only one of apiVersion and kind")
	// errStrictDecode wraps a field Kubernetes does not know, a duplicate
	// key or a value of the wrong type.
	errStrictDecode = errors.New("strict decode failed")
)

// knownKinds maps "apiVersion kind" to a new typed object of that kind.
var knownKinds = map[string]func() any{
	"v1 ConfigMap":             func() any { return &corev1.ConfigMap{} },
	"v1 Namespace":             func() any { return &corev1.Namespace{} },
	"v1 PersistentVolumeClaim": func() any { return &corev1.PersistentVolumeClaim{} },
	"v1 Secret":                func() any { return &corev1.Secret{} },
	"v1 Service":               func() any { return &corev1.Service{} },
	"v1 ServiceAccount":        func() any { return &corev1.ServiceAccount{} },
	"apps/v1 DaemonSet":        func() any { return &appsv1.DaemonSet{} },
	"apps/v1 Deployment":       func() any { return &appsv1.Deployment{} },
	"apps/v1 StatefulSet":      func() any { return &appsv1.StatefulSet{} },
	"rbac.authorization.k8s.io/v1 ClusterRole":        func() any { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1 ClusterRoleBinding": func() any { return &rbacv1.ClusterRoleBinding{} },
	"rbac.authorization.k8s.io/v1 Role":               func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1 RoleBinding":        func() any { return &rbacv1.RoleBinding{} },
}

// document is one YAML document of a file under docker/.
type document struct {
	file  string // relative to docker/
	index int    // 0-based position in the file
	raw   []byte
}

func (d document) String() string { return fmt.Sprintf("%s (document %d)", d.file, d.index+1) }

// object is a document decoded into its Kubernetes type.
type object struct {
	document
	apiVersion, kind, name string
	value                  any // *corev1.ConfigMap, *appsv1.Deployment, ...
}

// yamlFiles lists every *.yaml and *.yml file under root, relative to it.
func yamlFiles(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root {
			// A nested module (docker/observability) decodes its own
			// files with the types it depends on (PrometheusRule).
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir
			}
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	sort.Strings(files)
	return files, err
}

// splitDocuments splits a multi-document YAML stream the way kubectl does,
// dropping documents that hold only comments or whitespace.
func splitDocuments(data []byte) ([][]byte, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if !onlyComments(doc) {
			docs = append(docs, doc)
		}
	}
}

func onlyComments(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// readDocuments reads every YAML document under root.
func readDocuments(root string) ([]document, error) {
	files, err := yamlFiles(root)
	if err != nil {
		return nil, err
	}
	var docs []document
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			return nil, err
		}
		parts, err := splitDocuments(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for i, p := range parts {
			docs = append(docs, document{file: f, index: i, raw: p})
		}
	}
	return docs, nil
}

// decodeManifest decodes one document. A document with neither apiVersion
// nor kind is not a Kubernetes manifest (a Fluent Bit or metership config):
// it only has to be valid YAML, and ok is false. Anything with both is
// decoded strictly into its typed object: unknown fields, duplicate keys,
// wrong types and unknown kinds are errors.
func decodeManifest(raw []byte) (obj any, apiVersion, kind string, ok bool, err error) {
	var generic any
	if err := yaml.Unmarshal(raw, &generic); err != nil {
		return nil, "", "", false, fmt.Errorf("not valid YAML: %w", err)
	}
	top, isMap := generic.(map[string]any)
	if !isMap {
		return nil, "", "", false, nil
	}
	av, hasAV := top["apiVersion"]
	k, hasKind := top["kind"]
	switch {
	case !hasAV && !hasKind:
		return nil, "", "", false, nil
	case !hasAV || !hasKind:
		return nil, "", "", false, fmt.Errorf("%w (apiVersion %v, kind %v)", errPartialTypeMeta, av, k)
	}
	apiVersion, _ = av.(string)
	kind, _ = k.(string)
	factory, known := knownKinds[apiVersion+" "+kind]
	if !known {
		return nil, apiVersion, kind, true, fmt.Errorf("%w %q %q: add it to knownKinds with its k8s.io/api type", errUnknownKind, apiVersion, kind)
	}
	obj = factory()
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		return nil, apiVersion, kind, true, fmt.Errorf("%w: %s %s: %w", errStrictDecode, apiVersion, kind, err)
	}
	return obj, apiVersion, kind, true, nil
}

// objectName returns metadata.name of a decoded object.
func objectName(v any) string {
	type named interface{ GetName() string }
	if n, ok := v.(named); ok {
		return n.GetName()
	}
	return ""
}

// decodeTree decodes every Kubernetes document under root and returns the
// objects and one error per document that is not valid YAML or does not
// decode strictly.
func decodeTree(root string) ([]object, []error) {
	docs, err := readDocuments(root)
	if err != nil {
		return nil, []error{err}
	}
	var objs []object
	var errs []error
	for _, d := range docs {
		v, av, kind, isManifest, err := decodeManifest(d.raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d, err))
			continue
		}
		if isManifest {
			objs = append(objs, object{document: d, apiVersion: av, kind: kind, name: objectName(v), value: v})
		}
	}
	return objs, errs
}

// loadObjects is decodeTree failing the test for each error.
func loadObjects(t *testing.T, root string) []object {
	t.Helper()
	objs, errs := decodeTree(root)
	for _, err := range errs {
		t.Error(err)
	}
	return objs
}

// TestDecodeTreeReachesNestedFiles builds a docker/-like tree with a
// Fluent Bit directory holding a config, a plugins file and a manifest with
// a typo: the walk decodes the manifest, skips the configs and reports the
// typo with the file it is in.
func TestDecodeTreeReachesNestedFiles(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		path := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("fluent-bit/fluent-bit.yaml", "service:\n  flush: 1\npipeline:\n  outputs:\n    - name: metership\n      match: '*'\n")
	write("fluent-bit/plugins.yaml", "plugins:\n  - /fluent-bit/plugins/out_metership.so\n")
	write("fluent-bit/k8s.yml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\ndata:\n  a: b\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: typo\nautomountServiceAcountToken: false\n")
	write("k8s/notes.txt", "apiVersion: nonsense\n")

	objs, errs := decodeTree(root)
	if len(objs) != 1 || objs[0].kind != "ConfigMap" || objs[0].file != "fluent-bit/k8s.yml" {
		t.Fatalf("objects %+v", objs)
	}
	if len(errs) != 1 || !errors.Is(errs[0], errStrictDecode) || !strings.Contains(errs[0].Error(), "fluent-bit/k8s.yml (document 2)") || !strings.Contains(errs[0].Error(), "automountServiceAcountToken") {
		t.Fatalf("errors %v, want one strict-decode error naming fluent-bit/k8s.yml (document 2)", errs)
	}
}

// TestManifestsDecodeStrictly decodes every YAML document under docker/,
// including the Fluent Bit examples, with the Kubernetes API types.
func TestManifestsDecodeStrictly(t *testing.T) {
	objs := loadObjects(t, ".")
	perFile := map[string][]string{}
	for _, o := range objs {
		if o.name == "" {
			t.Errorf("%s: %s has no metadata.name", o.document, o.kind)
		}
		perFile[o.file] = append(perFile[o.file], o.kind+"/"+o.name)
		for _, p := range podSpecsOf(o) {
			for _, err := range checkPodTemplate(p, claimTemplateNames(o)...) {
				t.Errorf("%s: %s %s: %v", o.document, o.kind, o.name, err)
			}
		}
	}
	// The walk must have found the examples this package documents; a
	// broken walk that checks nothing must not pass.
	want := map[string][]string{
		"k8s/sidecar.yaml":        {"ServiceAccount/metership", "ConfigMap/metership-sidecar", "Deployment/billing-app"},
		"k8s/sidecar-native.yaml": {"ServiceAccount/metership", "ConfigMap/metership-sidecar", "Deployment/billing-app"},
		"k8s/daemonset.yaml":      {"ServiceAccount/metership-node", "ConfigMap/metership-node", "DaemonSet/metership-node"},
	}
	for file, kinds := range want {
		if got := strings.Join(perFile[file], " "); got != strings.Join(kinds, " ") {
			t.Errorf("%s: objects %q, want %q", file, got, strings.Join(kinds, " "))
		}
	}
	for file, got := range perFile {
		t.Logf("%s: %s", file, strings.Join(got, ", "))
	}
}

// TestSharedObjectsAgree checks that an object defined in more than one
// example (the sidecar variants share their ServiceAccount and ConfigMap)
// is the same everywhere, since the last kubectl apply wins.
func TestSharedObjectsAgree(t *testing.T) {
	seen := map[string]object{}
	for _, o := range loadObjects(t, "k8s") {
		if o.kind == "Deployment" || o.kind == "DaemonSet" || o.kind == "StatefulSet" {
			continue
		}
		key := o.apiVersion + " " + o.kind + "/" + o.name
		prev, dup := seen[key]
		if !dup {
			seen[key] = o
			continue
		}
		a, errA := yaml.Marshal(prev.value)
		b, errB := yaml.Marshal(o.value)
		if errA != nil || errB != nil {
			t.Fatalf("marshal: %v %v", errA, errB)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between %s and %s:\n%s\n---\n%s", key, prev.file, o.file, a, b)
		}
	}
}

// podSpecsOf returns the pod template specs of a workload object.
func podSpecsOf(o object) []*corev1.PodTemplateSpec {
	switch v := o.value.(type) {
	case *appsv1.Deployment:
		return []*corev1.PodTemplateSpec{&v.Spec.Template}
	case *appsv1.DaemonSet:
		return []*corev1.PodTemplateSpec{&v.Spec.Template}
	case *appsv1.StatefulSet:
		return []*corev1.PodTemplateSpec{&v.Spec.Template}
	}
	return nil
}

// selectorOf returns the matchLabels of a workload, nil for other kinds.
func selectorOf(o object) map[string]string {
	switch v := o.value.(type) {
	case *appsv1.Deployment:
		if v.Spec.Selector != nil {
			return v.Spec.Selector.MatchLabels
		}
	case *appsv1.DaemonSet:
		if v.Spec.Selector != nil {
			return v.Spec.Selector.MatchLabels
		}
	case *appsv1.StatefulSet:
		if v.Spec.Selector != nil {
			return v.Spec.Selector.MatchLabels
		}
	}
	return nil
}

// claimTemplateNames returns the volumeClaimTemplates of a StatefulSet,
// which its containers mount like pod volumes.
func claimTemplateNames(o object) []string {
	ss, ok := o.value.(*appsv1.StatefulSet)
	if !ok {
		return nil
	}
	var names []string
	for _, c := range ss.Spec.VolumeClaimTemplates {
		names = append(names, c.Name)
	}
	return names
}

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// checkPodTemplate applies the API server's checks that strict decoding
// cannot see and that a typo easily breaks: container and volume names,
// mounts of undefined volumes, missing images. claims are volume names the
// workload defines outside the pod (a StatefulSet's volumeClaimTemplates).
func checkPodTemplate(p *corev1.PodTemplateSpec, claims ...string) []error {
	var errs []error
	volumes := map[string]bool{}
	for _, c := range claims {
		volumes[c] = true
	}
	for _, v := range p.Spec.Volumes {
		if !dns1123Label.MatchString(v.Name) {
			errs = append(errs, fmt.Errorf("volume name %q is not a DNS-1123 label", v.Name))
		}
		if volumes[v.Name] {
			errs = append(errs, fmt.Errorf("volume %q defined twice", v.Name))
		}
		volumes[v.Name] = true
	}
	names := map[string]bool{}
	all := append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...)
	if len(p.Spec.Containers) == 0 {
		errs = append(errs, errors.New("no containers"))
	}
	for _, c := range all {
		if !dns1123Label.MatchString(c.Name) {
			errs = append(errs, fmt.Errorf("container name %q is not a DNS-1123 label", c.Name))
		}
		if names[c.Name] {
			errs = append(errs, fmt.Errorf("container %q defined twice", c.Name))
		}
		names[c.Name] = true
		if c.Image == "" {
			errs = append(errs, fmt.Errorf("container %q has no image", c.Name))
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				errs = append(errs, fmt.Errorf("container %q mounts undefined volume %q", c.Name, m.Name))
			}
			if !strings.HasPrefix(m.MountPath, "/") {
				errs = append(errs, fmt.Errorf("container %q mounts %q at a relative path %q", c.Name, m.Name, m.MountPath))
			}
		}
	}
	return errs
}

// TestWorkloadSelectorsMatchTemplates catches a selector that does not
// select its own pods, which the API server rejects on apply.
func TestWorkloadSelectorsMatchTemplates(t *testing.T) {
	for _, o := range loadObjects(t, ".") {
		specs := podSpecsOf(o)
		if len(specs) == 0 {
			continue
		}
		sel := selectorOf(o)
		if len(sel) == 0 {
			t.Errorf("%s: %s %s has no spec.selector.matchLabels", o.document, o.kind, o.name)
		}
		for k, v := range sel {
			if specs[0].Labels[k] != v {
				t.Errorf("%s: %s %s selects %s=%s but its template has %q", o.document, o.kind, o.name, k, v, specs[0].Labels[k])
			}
		}
	}
}

// TestDecoderRejectsBrokenManifests shows that the strict decoder used on
// the real manifests fails on the mistakes it is there to catch.
func TestDecoderRejectsBrokenManifests(t *testing.T) {
	const valid = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  selector:
    matchLabels: {app: a}
  template:
    metadata:
      labels: {app: a}
    spec:
      containers:
        - name: app
          image: busybox:1.36
          resources:
            limits: {memory: 128Mi}
`
	v, _, _, ok, err := decodeManifest([]byte(valid))
	if err != nil || !ok {
		t.Fatalf("valid manifest: ok %v, err %v", ok, err)
	}
	d := v.(*appsv1.Deployment)
	if got := d.Spec.Template.Spec.Containers[0].Resources.Limits.Memory().Value(); got != 128<<20 {
		t.Fatalf("memory limit decoded as %d", got)
	}

	for _, tc := range []struct {
		name, old, new string
		want           error
	}{
		{"unknown container field", "          image: busybox:1.36\n", "          image: busybox:1.36\n          imagePullPolice: Always\n", errStrictDecode},
		{"misspelt metadata", "metadata:\n  name: app\n", "metdata:\n  name: app\n", errStrictDecode},
		{"duplicate key", "  name: app\n", "  name: app\n  name: app2\n", errStrictDecode},
		{"wrong type", "spec:\n", "spec:\n  replicas: one\n", errStrictDecode},
		{"bad quantity", "{memory: 128Mi}", "{memory: 128Mx}", errStrictDecode},
		{"field at the wrong level", "      containers:\n", "      image: busybox\n      containers:\n", errStrictDecode},
		{"misspelt kind", "kind: Deployment\n", "kind: Deploymnet\n", errUnknownKind},
		{"wrong apiVersion", "apiVersion: apps/v1\n", "apiVersion: apps/v1beta2\n", errUnknownKind},
		{"misspelt apiVersion key", "apiVersion: apps/v1\n", "apiversion: apps/v1\n", errPartialTypeMeta},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broken := strings.Replace(valid, tc.old, tc.new, 1)
			if broken == valid {
				t.Fatalf("replacement %q not applied", tc.old)
			}
			_, _, _, _, err := decodeManifest([]byte(broken))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("not YAML", func(t *testing.T) {
		if _, _, _, _, err := decodeManifest([]byte("a: [1, 2\n")); err == nil {
			t.Fatal("unterminated flow sequence accepted")
		}
	})
	t.Run("config without apiVersion is not a manifest", func(t *testing.T) {
		_, _, _, ok, err := decodeManifest([]byte("service:\n  flush: 1\npipeline:\n  inputs: []\n"))
		if ok || err != nil {
			t.Fatalf("ok %v, err %v", ok, err)
		}
	})
	t.Run("pod template checks", func(t *testing.T) {
		p := d.Spec.Template.DeepCopy()
		p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "logs", MountPath: "/var/log/app"}}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "app"})
		errs := checkPodTemplate(p)
		got := fmt.Sprint(errs)
		for _, want := range []string{`mounts undefined volume "logs"`, `container "app" defined twice`, `container "app" has no image`} {
			if !strings.Contains(got, want) {
				t.Errorf("checkPodTemplate: %s; want %q", got, want)
			}
		}
		p.Spec.Containers = p.Spec.Containers[:1]
		if errs := checkPodTemplate(p, "logs"); len(errs) != 0 {
			t.Errorf("mount of a claim template rejected: %v", errs)
		}
	})
}

// TestSplitDocuments pins the document splitting the walk relies on.
func TestSplitDocuments(t *testing.T) {
	in := "# header only\n---\na: 1\n---\n# comment\n---\nb: 2\n...\n"
	docs, err := splitDocuments([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range docs {
		var m map[string]int
		if err := yaml.Unmarshal(d, &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprint(m))
	}
	if strings.Join(got, " ") != "map[a:1] map[b:2]" {
		t.Fatalf("documents %q", got)
	}
}

// metershipConfigKey reports whether a ConfigMap key or file name holds a
// metership agent configuration.
func metershipConfigKey(name string) bool {
	base := filepath.Base(name)
	return strings.HasPrefix(base, "metership") && (strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml"))
}

var envReference = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// checkMetershipConfig parses a metership.yaml the way `metership run`
// does and validates it (needSources: as `run` does; false for a config
// the Fluent Bit plugin loads, whose records come from Fluent Bit). Every
// ${ENV} reference must have a default, so the example works as shipped: it
// is checked with all of them unset, then with env set on top.
func checkMetershipConfig(t *testing.T, text string, needSources bool, env map[string]string) (conf.Config, error) {
	t.Helper()
	for _, m := range envReference.FindAllStringSubmatch(text, -1) {
		if m[2] == "" {
			return conf.Config{}, fmt.Errorf("${%s} has no default; write ${%s:-default}", m[1], m[1])
		}
		t.Setenv(m[1], "")
		if err := os.Unsetenv(m[1]); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := conf.Parse([]byte(text))
	var keyErrs conf.Errors
	if err != nil && !errors.As(err, &keyErrs) {
		return conf.Config{}, fmt.Errorf("parse: %w", err)
	}
	if err := engine.Validate(cfg, err, needSources); err != nil {
		return conf.Config{}, fmt.Errorf("validate:\n%w", err)
	}
	return cfg, nil
}

// meteringEnv turns on Marketplace metering in the examples that read it
// from the environment, so that variant is validated too.
var meteringEnv = map[string]string{
	"METERSHIP_METERING_MODE": "meter_usage",
	"METERSHIP_PRODUCT_CODE":  "example-product-code",
}

// embeddedConfigs returns every metership configuration under docker/: the
// metership*.yaml keys of ConfigMaps and standalone metership*.yaml files.
func embeddedConfigs(t *testing.T) map[string]string {
	t.Helper()
	configs := map[string]string{}
	for _, o := range loadObjects(t, ".") {
		cm, ok := o.value.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		for key, text := range cm.Data {
			if metershipConfigKey(key) {
				configs[fmt.Sprintf("%s: ConfigMap %s key %s", o.file, cm.Name, key)] = text
			}
		}
	}
	files, err := yamlFiles(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !metershipConfigKey(f) {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		configs[f] = string(b)
	}
	return configs
}

// TestMetershipConfigsValidate parses and validates every metership
// configuration shipped under docker/ with the agent's own loader.
func TestMetershipConfigsValidate(t *testing.T) {
	configs := embeddedConfigs(t)
	for _, want := range []string{
		"agent/metership.yaml",
		"k8s/sidecar.yaml: ConfigMap metership-sidecar key metership.yaml",
		"k8s/sidecar-native.yaml: ConfigMap metership-sidecar key metership.yaml",
		"k8s/daemonset.yaml: ConfigMap metership-node key metership.yaml",
		"k8s/daemonset.yaml: ConfigMap metership-node key metership-hostpath.yaml",
	} {
		if _, ok := configs[want]; !ok {
			t.Errorf("config %q not found", want)
		}
	}
	for name, text := range configs {
		// The plugin's config_file gets its records from Fluent Bit: no
		// sources needed there.
		needSources := !strings.HasPrefix(name, "fluent-bit/")
		t.Run(name, func(t *testing.T) {
			if _, err := checkMetershipConfig(t, text, needSources, nil); err != nil {
				t.Fatalf("as shipped: %v", err)
			}
			if strings.Contains(text, "METERSHIP_METERING_MODE") {
				cfg, err := checkMetershipConfig(t, text, needSources, meteringEnv)
				if err != nil {
					t.Fatalf("with metering on: %v", err)
				}
				if cfg.Metering.Mode != "meter_usage" || cfg.Metering.ProductCode != "example-product-code" {
					t.Fatalf("metering env not applied: %+v", cfg.Metering)
				}
			}
		})
	}
}

// TestConfigCheckRejectsMistakes shows that the config check fails on a
// misspelt key, an invalid value and an env reference without a default.
func TestConfigCheckRejectsMistakes(t *testing.T) {
	base := "sources:\n  - paths: [\"/var/log/app/*.log\"]\noutput:\n  url: s3://billing-bucket/ingest/amberdata\n"
	if _, err := checkMetershipConfig(t, base, true, nil); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for name, text := range map[string]string{
		"misspelt key":        base + "bufer:\n  dir: /var/lib/metership\n",
		"invalid value":       base + "records:\n  format: csv\n",
		"no sources":          "output:\n  url: s3://billing-bucket/ingest/amberdata\n",
		"env without default": base + "metering:\n  product_code: ${METERSHIP_TEST_UNSET_CODE}\n",
	} {
		if _, err := checkMetershipConfig(t, text, true, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestEmbeddedYAMLIsValid checks the other YAML files kept inside
// ConfigMaps (Fluent Bit configs) and every Fluent Bit YAML that loads
// plugins: valid YAML, and plugins a list of shared-object paths.
func TestEmbeddedYAMLIsValid(t *testing.T) {
	texts := map[string]string{}
	for _, o := range loadObjects(t, ".") {
		if cm, ok := o.value.(*corev1.ConfigMap); ok {
			for key, text := range cm.Data {
				if strings.HasSuffix(key, ".yaml") || strings.HasSuffix(key, ".yml") {
					texts[fmt.Sprintf("%s: ConfigMap %s key %s", o.file, cm.Name, key)] = text
				}
			}
		}
	}
	docs, err := readDocuments(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		texts[d.String()] = string(d.raw)
	}
	for name, text := range texts {
		if err := checkPluginsList(text); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := checkPluginsList("plugins:\n  - /fluent-bit/plugins/out_metership.so\n"); err != nil {
		t.Errorf("valid plugins list rejected: %v", err)
	}
	for _, bad := range []string{"plugins: /fluent-bit/out_metership.so\n", "plugins:\n  - ''\n", "plugins:\n  - [a\n"} {
		if err := checkPluginsList(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// checkPluginsList parses text as YAML (every document) and, where a
// document has a top-level plugins key, requires a list of non-empty paths.
func checkPluginsList(text string) error {
	parts, err := splitDocuments([]byte(text))
	if err != nil {
		return err
	}
	for _, p := range parts {
		var top any
		if err := yaml.Unmarshal(p, &top); err != nil {
			return fmt.Errorf("not valid YAML: %w", err)
		}
		m, ok := top.(map[string]any)
		if !ok {
			continue
		}
		plugins, has := m["plugins"]
		if !has {
			continue
		}
		list, ok := plugins.([]any)
		if !ok {
			return fmt.Errorf("plugins: want a list of plugin paths, got %T", plugins)
		}
		for i, item := range list {
			if s, ok := item.(string); !ok || strings.TrimSpace(s) == "" {
				return fmt.Errorf("plugins[%d]: want a non-empty path, got %v", i, item)
			}
		}
	}
	return nil
}
