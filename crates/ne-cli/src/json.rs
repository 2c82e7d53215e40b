// SPDX-License-Identifier: Apache-2.0
//! JSON output with nitro-cli's field names and value strings, so tools that parse
//! nitro-cli's output can parse ours.

use serde::{Deserialize, Serialize};

/// PCRs as nitro-cli prints them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasurementsJson {
    /// `Sha384 { ... }`.
    #[serde(rename = "HashAlgorithm")]
    pub hash_algorithm: String,
    /// PCR0, hex.
    #[serde(rename = "PCR0")]
    pub pcr0: String,
    /// PCR1, hex.
    #[serde(rename = "PCR1")]
    pub pcr1: String,
    /// PCR2, hex.
    #[serde(rename = "PCR2")]
    pub pcr2: String,
    /// PCR8 (the signing certificate), hex, when the image is signed.
    #[serde(rename = "PCR8", skip_serializing_if = "Option::is_none")]
    pub pcr8: Option<String>,
}

impl From<&ne_eif::Measurements> for MeasurementsJson {
    fn from(m: &ne_eif::Measurements) -> Self {
        MeasurementsJson {
            hash_algorithm: m.hash_algorithm.to_owned(),
            pcr0: m.pcr0.to_string(),
            pcr1: m.pcr1.to_string(),
            pcr2: m.pcr2.to_string(),
            pcr8: m.pcr8.map(|pcr| pcr.to_string()),
        }
    }
}

/// One enclave, as `describe-enclaves` lists it; `run-enclave` prints the same without
/// `State` and `Flags`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnclaveJson {
    /// The name given, or the EIF's file stem.
    #[serde(rename = "EnclaveName")]
    pub name: String,
    /// `<instance id>-enc<slot uid in hex>`.
    #[serde(rename = "EnclaveID")]
    pub id: String,
    /// The process holding the enclave (the emulated parent).
    #[serde(rename = "ProcessID")]
    pub process_id: u32,
    /// The enclave's vsock CID.
    #[serde(rename = "EnclaveCID")]
    pub cid: u64,
    /// How many vCPUs it has.
    #[serde(rename = "NumberOfCPUs")]
    pub cpu_count: usize,
    /// Which parent CPUs.
    #[serde(rename = "CPUIDs")]
    pub cpu_ids: Vec<u32>,
    /// Its memory.
    #[serde(rename = "MemoryMiB")]
    pub memory_mib: u64,
    /// `RUNNING`, `TERMINATING` or `EMPTY`.
    #[serde(rename = "State", skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `NONE` or `DEBUG_MODE`.
    #[serde(rename = "Flags", skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    /// The image's PCRs.
    #[serde(rename = "Measurements", skip_serializing_if = "Option::is_none")]
    pub measurements: Option<MeasurementsJson>,
    /// The image's name, from its metadata (`describe-enclaves --metadata`).
    #[serde(rename = "ImageName", skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    /// The image's version, from its metadata.
    #[serde(rename = "ImageVersion", skip_serializing_if = "Option::is_none")]
    pub image_version: Option<String>,
    /// How the image was built, as nitro-cli prints it: `BuildTime`, `BuildTool`,
    /// `BuildToolVersion`, `OperatingSystem`, `KernelVersion`, `DockerInfo`, and the
    /// builder's own keys.
    #[serde(rename = "Metadata", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl EnclaveJson {
    /// Adds what the image's metadata section says (nothing when it has none).
    pub fn add_metadata(&mut self, metadata: Option<&ne_eif::Metadata>) {
        let Some(metadata) = metadata else { return };
        self.image_name = Some(metadata.image_name.clone());
        self.image_version = Some(metadata.image_version.clone());
        let build = &metadata.build_info;
        let mut fields = serde_json::Map::new();
        for (key, value) in [
            ("BuildTime", &build.build_time),
            ("BuildTool", &build.build_tool),
            ("BuildToolVersion", &build.build_tool_version),
            ("OperatingSystem", &build.operating_system),
            ("KernelVersion", &build.kernel_version),
        ] {
            fields.insert(key.to_owned(), serde_json::Value::String(value.clone()));
        }
        fields.insert("DockerInfo".to_owned(), metadata.docker_info.clone());
        if let serde_json::Value::Object(custom) = &metadata.custom_info {
            for (key, value) in custom {
                fields.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        self.metadata = Some(serde_json::Value::Object(fields));
    }
}

/// What `terminate-enclave` prints per enclave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminatedJson {
    /// Its name.
    #[serde(rename = "EnclaveName")]
    pub name: String,
    /// Its ID.
    #[serde(rename = "EnclaveID")]
    pub id: String,
    /// Whether it was terminated.
    #[serde(rename = "Terminated")]
    pub terminated: bool,
}

/// What `describe-eif` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EifJson {
    /// The format version.
    #[serde(rename = "EifVersion")]
    pub version: u16,
    /// The image's PCRs.
    #[serde(rename = "Measurements")]
    pub measurements: MeasurementsJson,
    /// Whether it has a signature section.
    #[serde(rename = "IsSigned")]
    pub is_signed: bool,
    /// Whether the CRC matched (it always does: a mismatch is an error).
    #[serde(rename = "CheckCRC")]
    pub check_crc: bool,
    /// For a signed image: whether its certificate's key signed its PCR0.
    #[serde(rename = "SignatureCheck", skip_serializing_if = "Option::is_none")]
    pub sign_check: Option<bool>,
    /// Whether the kernel is for arm64.
    #[serde(rename = "ArmKernel")]
    pub arm_kernel: bool,
    /// The file's size in bytes.
    #[serde(rename = "Size")]
    pub size: u64,
    /// Its sections, in order.
    #[serde(rename = "Sections")]
    pub sections: Vec<SectionJson>,
    /// The metadata section, if any.
    #[serde(rename = "MetaData", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// One section of an EIF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionJson {
    /// kernel, cmdline, ramdisk, signature or metadata.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Its data size in bytes.
    #[serde(rename = "Size")]
    pub size: u64,
}

/// What `build-eif` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltJson {
    /// The image's PCRs.
    #[serde(rename = "Measurements")]
    pub measurements: MeasurementsJson,
}
