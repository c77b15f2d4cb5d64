package csinode

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// AttributeName is the volume attribute that sets the `tempfs mount` flag: the flag's name in camelCase
// (max-size: maxSize), as Kubernetes writes its own fields.
func AttributeName(flag string) string {
	words := strings.Split(flag, "-")
	for i := 1; i < len(words); i++ {
		if words[i] != "" {
			words[i] = strings.ToUpper(words[i][:1]) + words[i][1:]
		}
	}
	return strings.Join(words, "")
}

// kubernetesPrefix marks the attributes the kubelet adds on its own (pod name, namespace, uid, service account,
// "ephemeral") when the CSIDriver asks for pod info on mount: they are not the pod author's, so they are ignored.
const kubernetesPrefix = "csi.storage.k8s.io/"

// FlagChecker checks the value of one `tempfs mount` flag with the parser the command line uses, so that a bad
// attribute is refused with the same message before any daemon starts.
type FlagChecker func(flag, value string) error

// mountFlags turns a volume's attributes into `tempfs mount` flags. attributeFlags are the flags a pod may set
// (Config.AttributeFlags), in the order they are passed. It returns the flags and the tempfs attributes alone
// (the kubelet's own left out), which is what tells one publication of a volume from another. An unknown
// attribute or a bad value is an error of one line naming the attribute.
func mountFlags(context map[string]string, attributeFlags []string, check FlagChecker) ([]string, map[string]string, error) {
	known := make(map[string]string, len(attributeFlags))
	for _, f := range attributeFlags {
		known[AttributeName(f)] = f
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
			return nil, nil, fmt.Errorf("unknown volume attribute %s: tempfs takes %s", quote(k), attributeNames(attributeFlags))
		}
		if err := check(flag, context[k]); err != nil {
			// The parser's message quotes the value too: a pod may set a megabyte, and the kubelet shows the message.
			return nil, nil, fmt.Errorf("volume attribute %s=%s: %s", k, quote(context[k]), shorten(err.Error(), context[k]))
		}
		own[k] = context[k]
	}
	var flags []string
	for _, f := range attributeFlags {
		if v, ok := own[AttributeName(f)]; ok {
			flags = append(flags, "--"+f+"="+v)
		}
	}
	return flags, own, nil
}

func attributeNames(attributeFlags []string) string {
	names := make([]string, len(attributeFlags))
	for i, f := range attributeFlags {
		names[i] = AttributeName(f)
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
