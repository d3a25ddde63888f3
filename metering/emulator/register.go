package emulator

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
)

// registerUsage implements RegisterUsage: the product must be configured,
// PublicKeyVersion must be 1 (the only version AWS has issued) and the
// caller entitled. The Signature is an unsigned JWT ("alg":"none") carrying
// the request's claims: it has AWS's shape but cannot be verified with
// AWS's public key.
func (e *Emulator) registerUsage(rc *requestContext, body []byte) (any, *apiError) {
	var in registerUsageInput
	if apiErr := decodeBody(body, &in); apiErr != nil {
		return nil, apiErr
	}
	product, _, apiErr := e.lookupProduct(in.ProductCode)
	if apiErr != nil {
		return nil, apiErr
	}
	if in.PublicKeyVersion == nil {
		return nil, badRequest(CodeValidation, "PublicKeyVersion is required")
	}
	if v, err := strconv.ParseInt(in.PublicKeyVersion.String(), 10, 32); err != nil || v != 1 {
		return nil, badRequest(CodeInvalidPublicKeyVersion, "PublicKeyVersion %s is not a valid public key version", in.PublicKeyVersion.String())
	}
	var nonce string
	if in.Nonce != nil {
		nonce = *in.Nonce
		if len(nonce) > maxIdentifierLen {
			return nil, badRequest(CodeValidation, "Nonce must be at most %d characters", maxIdentifierLen)
		}
	}
	if slices.Contains(e.cfg.NotEntitledInstances, rc.instance) {
		return nil, badRequest(CodeCustomerNotEntitled, "caller %q has no subscription to product %q", rc.instance, product)
	}
	header, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{
		"productCode":      product,
		"publicKeyVersion": 1,
		"nonce":            nonce,
		"iat":              rc.now.Unix(),
		"instance":         rc.instance,
	})
	enc := base64.RawURLEncoding
	return registerUsageOutput{Signature: enc.EncodeToString(header) + "." + enc.EncodeToString(claims) + "."}, nil
}

// resolveCustomer implements ResolveCustomer from Config.Customers.
func (e *Emulator) resolveCustomer(_ *requestContext, body []byte) (any, *apiError) {
	var in resolveCustomerInput
	if apiErr := decodeBody(body, &in); apiErr != nil {
		return nil, apiErr
	}
	if in.RegistrationToken == nil || *in.RegistrationToken == "" {
		return nil, badRequest(CodeValidation, "RegistrationToken is required")
	}
	c, ok := e.cfg.Customers[*in.RegistrationToken]
	if !ok {
		return nil, badRequest(CodeInvalidToken, "registration token is invalid or expired")
	}
	return resolveCustomerOutput{
		CustomerAWSAccountID: c.CustomerAWSAccountID,
		CustomerIdentifier:   c.CustomerIdentifier,
		LicenseArn:           c.LicenseArn,
		ProductCode:          c.ProductCode,
	}, nil
}
