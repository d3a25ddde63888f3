package docker

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// codeBlocks returns the fenced code blocks of a Markdown text with the
// given info string.
func codeBlocks(markdown, lang string) []string {
	re := regexp.MustCompile("(?s)```" + regexp.QuoteMeta(lang) + "\n(.*?)```")
	var blocks []string
	for _, m := range re.FindAllStringSubmatch(markdown, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// iamPolicy is the part of an IAM policy document the README check reads.
type iamPolicy struct {
	Version   string
	Statement []struct {
		Sid       string
		Effect    string
		Principal map[string]string
		Action    stringOrList
		Resource  stringOrList
		Condition map[string]map[string]string
	}
}

// stringOrList decodes IAM's "one string or a list of strings" fields.
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	*s = list
	return nil
}

// TestReadmeSection checks the README sections on running the agent: its JSON is
// valid, the IAM policy grants what the agent calls on the sidecar's bucket
// and prefix, and every docker/ path it names exists.
func TestReadmeSection(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	// The sections on running the agent: from "Run as a sidecar" up to the
	// Fluent Bit section.
	start := strings.Index(text, "\n## Run as a sidecar")
	end := strings.Index(text, "\n## Use with Fluent Bit")
	if start < 0 || end < start {
		t.Fatal("README.md lacks the sections from \"## Run as a sidecar\" to \"## Use with Fluent Bit\"")
	}
	text = text[start:end]

	var actions, subjects []string
	resourcesOf := map[string][]string{} // action -> resources granted
	blocks := codeBlocks(text, "json")
	if len(blocks) == 0 {
		t.Fatal("no json blocks")
	}
	for _, block := range blocks {
		dec := json.NewDecoder(strings.NewReader(block))
		dec.DisallowUnknownFields()
		var p iamPolicy
		if err := dec.Decode(&p); err != nil {
			t.Fatalf("json block is not an IAM policy: %v\n%s", err, block)
		}
		if p.Version != "2012-10-17" {
			t.Errorf("policy Version %q", p.Version)
		}
		for _, s := range p.Statement {
			if s.Effect != "Allow" {
				t.Errorf("statement %q: Effect %q", s.Sid, s.Effect)
			}
			actions = append(actions, s.Action...)
			for _, a := range s.Action {
				resourcesOf[a] = append(resourcesOf[a], s.Resource...)
			}
			for key, v := range s.Condition["StringEquals"] {
				if strings.HasSuffix(key, ":sub") {
					subjects = append(subjects, v)
				}
			}
		}
	}
	for _, want := range []string{
		"s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts",
		"s3:PutObjectAcl", "s3:PutObjectTagging", "kms:GenerateDataKey",
		"aws-marketplace:MeterUsage", "aws-marketplace:BatchMeterUsage",
		"sts:AssumeRoleWithWebIdentity",
	} {
		if !slices.Contains(actions, want) {
			t.Errorf("IAM policies lack %s", want)
		}
	}

	objs := objectsIn(t, "k8s/sidecar.yaml")
	sa := find[*corev1.ServiceAccount](t, objs)
	if want := "system:serviceaccount:billing:" + sa.Name; !slices.Equal(subjects, []string{want}) {
		t.Errorf("trust policy subjects %q, want %q (the sidecar's ServiceAccount in the README's namespace)", subjects, want)
	}
	cm := find[*corev1.ConfigMap](t, objs)
	cfg, err := checkMetershipConfig(t, cm.Data["metership.yaml"], true, nil)
	if err != nil {
		t.Fatal(err)
	}
	bucketPrefix := strings.TrimPrefix(cfg.Output.URL, "s3://")
	bucket, _, _ := strings.Cut(bucketPrefix, "/")
	for _, want := range []string{"arn:aws:s3:::" + bucketPrefix + "/*", "arn:aws:s3:::" + bucket + "/failed-requests/*"} {
		for _, action := range []string{"s3:PutObject", "s3:AbortMultipartUpload", "s3:PutObjectAcl"} {
			if !slices.Contains(resourcesOf[action], want) {
				t.Errorf("IAM policy does not grant %s on %s (the sidecar's output and dead letters)", action, want)
			}
		}
	}

	for _, path := range regexp.MustCompile(`docker/[A-Za-z0-9_./-]*[A-Za-z0-9_]`).FindAllString(text, -1) {
		if _, err := os.Stat("../" + path); err != nil && !strings.HasPrefix(path, "docker/fluent-bit") {
			t.Errorf("README names %s: %v", path, err)
		}
	}
}
