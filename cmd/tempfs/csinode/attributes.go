package csinode

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// attributes are the volume attributes a pod may set, in the order their flags are passed: the flags of
// `tempfs mount` in camelCase (docs/guarantees.md, Kubernetes).
var attributes = []struct{ name, flag string }{
	{"maxSize", "max-size"},
	{"memory", "memory"},
	{"disk", "disk"},
	{"mode", "mode"},
	{"maxAge", "max-age"},
	{"owner", "owner"},
	{"ownerQuota", "owner-quota"},
}

// kubernetesPrefix marks the attributes the kubelet adds on its own (pod name, namespace, uid, service account,
// "ephemeral") when the CSIDriver asks for pod info on mount: they are not the pod author's, so they are ignored.
const kubernetesPrefix = "csi.storage.k8s.io/"

// FlagChecker checks the value of one `tempfs mount` flag with the parser the command line uses, so that a bad
// attribute is refused with the same message before any daemon starts.
type FlagChecker func(flag, value string) error

// mountFlags turns a volume's attributes into `tempfs mount` flags. It returns the flags and the tempfs
// attributes alone (the kubelet's own left out), which is what tells one publication of a volume from another.
// An unknown attribute or a bad value is an error of one line naming the attribute.
func mountFlags(context map[string]string, check FlagChecker) ([]string, map[string]string, error) {
	known := make(map[string]string, len(attributes))
	for _, a := range attributes {
		known[a.name] = a.flag
	}
	keys := make([]string, 0, len(context))
	for k := range context {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first bad attribute is the same one on every call
	own := map[string]string{}
	for _, k := range keys {
		if strings.HasPrefix(k, kubernetesPrefix) {
			continue
		}
		flag, ok := known[k]
		if !ok {
			return nil, nil, fmt.Errorf("unknown volume attribute %s: tempfs takes %s", quote(k), attributeNames())
		}
		if err := check(flag, context[k]); err != nil {
			// The parser's message quotes the value too: a pod may set a megabyte, and the kubelet shows the message.
			return nil, nil, fmt.Errorf("volume attribute %s=%s: %s", k, quote(context[k]), shorten(err.Error(), context[k]))
		}
		own[k] = context[k]
	}
	var flags []string
	for _, a := range attributes {
		if v, ok := own[a.name]; ok {
			flags = append(flags, "--"+a.flag+"="+v)
		}
	}
	return flags, own, nil
}

func attributeNames() string {
	names := make([]string, len(attributes))
	for i, a := range attributes {
		names[i] = a.name
	}
	return strings.Join(names, ", ")
}

// maxQuoted is the most of a value an error message quotes: enough to recognize it, and a value of a megabyte
// does not become a megabyte of message in the kubelet's events and logs.
const maxQuoted = 100

// quote quotes v as %q does, cut to its first maxQuoted bytes (at a character's start) with its length said.
func quote(v string) string {
	if len(v) <= maxQuoted {
		return strconv.Quote(v)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return fmt.Sprintf("%s... (%d bytes)", strconv.Quote(v[:cut]), len(v))
}

// shorten replaces a long value where msg quotes it (or holds it bare) with its quote.
func shorten(msg, value string) string {
	if len(value) <= maxQuoted {
		return msg
	}
	msg = strings.ReplaceAll(msg, strconv.Quote(value), quote(value))
	return strings.ReplaceAll(msg, value, quote(value))
}
