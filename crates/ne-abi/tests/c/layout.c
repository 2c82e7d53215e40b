/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prints the size and field offsets of every NE device struct, declared here from the
 * device interface header (ne_pci_dev.h), and of the uapi structs from the system's
 * <linux/nitro_enclaves.h> when it is installed. The Rust test compares each line with
 * ne-abi's layout. Output: one "name value" pair per line.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct enclave_start_req { uint64_t slot_uid; uint64_t enclave_cid; uint64_t flags; };
struct enclave_get_slot_req { uint64_t enclave_cid; };
struct enclave_stop_req { uint64_t slot_uid; };
struct slot_alloc_req { uint8_t unused; };
struct slot_free_req { uint64_t slot_uid; };
struct slot_add_mem_req { uint64_t slot_uid; uint64_t paddr; uint64_t size; };
struct slot_add_vcpu_req { uint64_t slot_uid; uint32_t vcpu_id; uint8_t padding[4]; };
struct slot_count_req { uint8_t unused; };
struct next_slot_req { uint64_t slot_uid; };
struct slot_info_req { uint64_t slot_uid; };
struct slot_add_bulk_vcpus_req { uint64_t slot_uid; uint64_t nr_vcpus; };
struct ne_pci_dev_cmd_reply {
	int32_t rc;
	uint8_t padding0[4];
	uint64_t slot_uid;
	uint64_t enclave_cid;
	uint64_t slot_count;
	uint64_t mem_regions;
	uint64_t mem_size;
	uint64_t nr_vcpus;
	uint64_t flags;
	uint16_t state;
	uint8_t padding1[6];
};

#define SIZE(s) printf("sizeof(%s) %zu\n", #s, sizeof(struct s))
#define OFF(s, f) printf("offsetof(%s.%s) %zu\n", #s, #f, offsetof(struct s, f))

int main(void)
{
	SIZE(enclave_start_req);
	OFF(enclave_start_req, slot_uid);
	OFF(enclave_start_req, enclave_cid);
	OFF(enclave_start_req, flags);
	SIZE(enclave_get_slot_req);
	OFF(enclave_get_slot_req, enclave_cid);
	SIZE(enclave_stop_req);
	OFF(enclave_stop_req, slot_uid);
	SIZE(slot_alloc_req);
	OFF(slot_alloc_req, unused);
	SIZE(slot_free_req);
	OFF(slot_free_req, slot_uid);
	SIZE(slot_add_mem_req);
	OFF(slot_add_mem_req, slot_uid);
	OFF(slot_add_mem_req, paddr);
	OFF(slot_add_mem_req, size);
	SIZE(slot_add_vcpu_req);
	OFF(slot_add_vcpu_req, slot_uid);
	OFF(slot_add_vcpu_req, vcpu_id);
	OFF(slot_add_vcpu_req, padding);
	SIZE(slot_count_req);
	OFF(slot_count_req, unused);
	SIZE(next_slot_req);
	OFF(next_slot_req, slot_uid);
	SIZE(slot_info_req);
	OFF(slot_info_req, slot_uid);
	SIZE(slot_add_bulk_vcpus_req);
	OFF(slot_add_bulk_vcpus_req, slot_uid);
	OFF(slot_add_bulk_vcpus_req, nr_vcpus);
	SIZE(ne_pci_dev_cmd_reply);
	OFF(ne_pci_dev_cmd_reply, rc);
	OFF(ne_pci_dev_cmd_reply, padding0);
	OFF(ne_pci_dev_cmd_reply, slot_uid);
	OFF(ne_pci_dev_cmd_reply, enclave_cid);
	OFF(ne_pci_dev_cmd_reply, slot_count);
	OFF(ne_pci_dev_cmd_reply, mem_regions);
	OFF(ne_pci_dev_cmd_reply, mem_size);
	OFF(ne_pci_dev_cmd_reply, nr_vcpus);
	OFF(ne_pci_dev_cmd_reply, flags);
	OFF(ne_pci_dev_cmd_reply, state);
	OFF(ne_pci_dev_cmd_reply, padding1);
	return 0;
}
