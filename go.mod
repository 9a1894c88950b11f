module github.com/iot-mns-bridge/iot-mns-bridge

go 1.26

require (
	github.com/Azure/go-amqp v1.7.0 // indirect
	github.com/go-stomp/stomp/v3 v3.1.5 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
