# Channel rules: content must reach the gateway sealed to the enclave.
package sealgate.authz

# SG-CHANNEL-001: requests must arrive HPKE-sealed (Oblivious HTTP, RFC 9458), so only the
# attested enclave can read them. Outside production, the development flag `allow_plaintext`
# admits plaintext requests; the decision then carries the obligation
# `plaintext_dev_mode: true`, which the gateway writes into the audit record. In production the
# flag is ignored.
plaintext_dev_mode if {
	channel == "plaintext"
	allow_plaintext == true
	mode == "development"
}

deny contains denial(
	"SG-CHANNEL-001",
	"requests must use the sealed channel",
) if {
	not channel == "sealed"
	not plaintext_dev_mode
}

obligations["plaintext_dev_mode"] := true if plaintext_dev_mode
