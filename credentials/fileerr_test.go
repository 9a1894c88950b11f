package credentials

import (
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestUnreadableFileNamesTheUser: a credentials file the process may not
// read (credentials_file, a key id file, a profile) says which user it runs
// as, as config's secret files do: "not readable by this user" left the
// operator of the image, which runs as 65532, with a root 0600 file
// mounted, to find that out (walk7).
func TestUnreadableFileNamesTheUser(t *testing.T) {
	err := fileErr("/run/secrets/credentials.json", &fs.PathError{Op: "open", Path: "/run/secrets/credentials.json", Err: syscall.EACCES})
	want := fmt.Sprintf("file /run/secrets/credentials.json is not readable by this user (uid %d, gid %d)", os.Getuid(), os.Getgid())
	if !strings.Contains(err.Error(), want) {
		t.Errorf("fileErr = %v, want it to say %q", err, want)
	}
}
