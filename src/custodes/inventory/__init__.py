"""Identity inventory: accounts, groups, roles, policies, access keys, last sign-in and MFA state from Entra ID,
Okta and AWS IAM, mapped to one entity per person, and the access review over them (docs/connectors.md)."""
