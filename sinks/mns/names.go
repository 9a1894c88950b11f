package mns

import "fmt"

// MaxNameLen is the longest MNS queue or topic name.
const MaxNameLen = 120

// ValidName reports whether name is a valid MNS queue or topic name: 1 to
// 120 characters, ASCII letters, digits and '-', starting with a letter or a
// digit. The error does not name the config field; callers add it.
func ValidName(name string) error {
	if name == "" {
		return fmt.Errorf("name is empty; MNS queue and topic names have 1 to %d characters", MaxNameLen)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("name %.20q... is %d characters long; MNS allows at most %d", name, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		case c == '-':
			return fmt.Errorf("name %q starts with '-'; MNS names start with a letter or a digit", name)
		default:
			return fmt.Errorf("name %q has %q at position %d; MNS names use only letters, digits and '-'", name, rune(c), i+1)
		}
	}
	return nil
}
