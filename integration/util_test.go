package integration

import "os"

func osMkdir(dir string) error { return os.Mkdir(dir, 0o755) }
