# Enclave rules: production traffic only reaches a real, non-debug confidential VM.
package sealgate.authz

# SG-ENCLAVE-001: in production the enclave evidence must come from real hardware
# (AMD SEV-SNP or Intel TDX), not the development `simulated` provider.
enclave_real if {
	enclave_simulated == false
	enclave_platform != "simulated"
}

deny contains denial(
	"SG-ENCLAVE-001",
	"a simulated enclave is not allowed in production",
) if {
	mode == "production"
	not enclave_real
}

# SG-ENCLAVE-002: in production the guest must not run with debugging enabled (SEV-SNP
# policy DEBUG bit, TDX TD_ATTRIBUTES.DEBUG), since a debug guest's memory can be read by the
# host.
deny contains denial(
	"SG-ENCLAVE-002",
	"a debug enclave is not allowed in production",
) if {
	mode == "production"
	not enclave_debug == false
}
