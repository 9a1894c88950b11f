package config

import "os"

// LoadHTTP reads only the http section of the config file at path, over
// Default's: what the status and healthcheck commands need to find a running
// bridge. The other sections are neither expanded nor validated, and no
// secret file is read, so an operator's shell needs neither the bridge's
// environment (the env file systemd or docker gives it) nor the right to
// read its secrets. Relative paths are resolved as Parse does
// (http.web_config_file against the config file's directory).
//
// Errors are *FieldErrors of the http keys (an unknown key, a ${VAR} with no
// value, a bad http.listen), each once and in the order of their lines as
// Parse reports them, or of the whole file's structure: its YAML syntax, a
// second document, a file that is no mapping.
func LoadHTTP(path string) (HTTP, error) {
	data, err := readFile(path)
	if err != nil {
		return HTTP{}, err
	}
	return parseHTTP(data, path, os.LookupEnv)
}

func parseHTTP(data []byte, path string, env func(string) (string, bool)) (HTTP, error) {
	cfg, w, err := decode(data, path, env, func(key string) bool { return key == "http" })
	if err != nil {
		return HTTP{}, err
	}
	cfg.resolve(w.env) // env, or an empty environment for nil
	v := validator{c: &cfg}
	v.httpListen()
	if err := report(append(w.errs, v.errs...)); err != nil {
		return HTTP{}, err
	}
	return cfg.HTTP, nil
}
