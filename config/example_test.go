package config_test

import (
	"fmt"

	"github.com/iot-mns-bridge/iot-mns-bridge/config"
)

func ExampleParse() {
	data := []byte(`
source:
  protocol: amqp
  endpoint: iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com
  client_id: edge-gw-01
  credentials:
    access_key_id: ${AK_ID}
    access_key_secret: ${AK_SECRET}
mns:
  endpoint: https://1234567890123456.mns.cn-hangzhou.aliyuncs.com
routes:
  - match: /{productKey}/{deviceName}/user/#
    queue: telemetry-{productKey}
  - match: /{productKey}/+/user/#
    queue: x_y
`)
	env := map[string]string{"AK_ID": "LTAI5tExample", "AK_SECRET": "not-printed"}
	_, err := config.Parse(data, "bridge.yaml", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	fmt.Println(err)

	data = data[:len(data)-len("  - match: /{productKey}/+/user/#\n    queue: x_y\n")]
	cfg, err := config.Parse(data, "bridge.yaml", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		fmt.Println(err)
		return
	}
	addr, _ := cfg.Source.Address()
	fmt.Println(addr, cfg.Source.AMQP.Credit, cfg.Delivery.Retry.MaxBackoff)
	fmt.Printf("%+v\n", cfg.MNS.Credentials)
	// Output:
	// bridge.yaml:15: routes[1].queue: "x_y" is not a valid MNS queue name: letters, digits and '-' only, not '_'
	// iot-06z00ax1o2vfzzz.amqp.iothub.aliyuncs.com:5671 64 30s
	// {Provider: AccessKeyID:LTAI5tExample AccessKeyIDFile: AccessKeySecret:*** AccessKeySecretFile: SecurityToken: SecurityTokenFile: CredentialsFile:}
}
