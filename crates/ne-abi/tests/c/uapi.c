/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prints the uapi constants and layouts of the system's <linux/nitro_enclaves.h>, one
 * "name value" pair per line, for the Rust test to compare with ne-abi.
 */
#include <stddef.h>
#include <stdio.h>
#include <linux/types.h>
#include <linux/ioctl.h>
#include <linux/nitro_enclaves.h>

#define SIZE(s) printf("sizeof(%s) %zu\n", #s, sizeof(struct s))
#define OFF(s, f) printf("offsetof(%s.%s) %zu\n", #s, #f, offsetof(struct s, f))
#define VALUE(c) printf("%s %llu\n", #c, (unsigned long long)(c))

int main(void)
{
	SIZE(ne_image_load_info);
	OFF(ne_image_load_info, flags);
	OFF(ne_image_load_info, memory_offset);
	SIZE(ne_user_memory_region);
	OFF(ne_user_memory_region, flags);
	OFF(ne_user_memory_region, memory_size);
	OFF(ne_user_memory_region, userspace_addr);
	SIZE(ne_enclave_start_info);
	OFF(ne_enclave_start_info, flags);
	OFF(ne_enclave_start_info, enclave_cid);
	VALUE(NE_CREATE_VM);
	VALUE(NE_ADD_VCPU);
	VALUE(NE_GET_IMAGE_LOAD_INFO);
	VALUE(NE_SET_USER_MEMORY_REGION);
	VALUE(NE_START_ENCLAVE);
	VALUE(NE_EIF_IMAGE);
	VALUE(NE_IMAGE_LOAD_MAX_FLAG_VAL);
	VALUE(NE_DEFAULT_MEMORY_REGION);
	VALUE(NE_MEMORY_REGION_MAX_FLAG_VAL);
	VALUE(NE_ENCLAVE_PRODUCTION_MODE);
	VALUE(NE_ENCLAVE_DEBUG_MODE);
	VALUE(NE_ENCLAVE_START_MAX_FLAG_VAL);
	VALUE(NE_ERR_VCPU_ALREADY_USED);
	VALUE(NE_ERR_VCPU_NOT_IN_CPU_POOL);
	VALUE(NE_ERR_VCPU_INVALID_CPU_CORE);
	VALUE(NE_ERR_INVALID_MEM_REGION_SIZE);
	VALUE(NE_ERR_INVALID_MEM_REGION_ADDR);
	VALUE(NE_ERR_UNALIGNED_MEM_REGION_ADDR);
	VALUE(NE_ERR_MEM_REGION_ALREADY_USED);
	VALUE(NE_ERR_MEM_NOT_HUGE_PAGE);
	VALUE(NE_ERR_MEM_DIFFERENT_NUMA_NODE);
	VALUE(NE_ERR_MEM_MAX_REGIONS);
	VALUE(NE_ERR_NO_MEM_REGIONS_ADDED);
	VALUE(NE_ERR_NO_VCPUS_ADDED);
	VALUE(NE_ERR_ENCLAVE_MEM_MIN_SIZE);
	VALUE(NE_ERR_FULL_CORES_NOT_USED);
	VALUE(NE_ERR_NOT_IN_INIT_STATE);
	VALUE(NE_ERR_INVALID_VCPU);
	VALUE(NE_ERR_NO_CPUS_AVAIL_IN_POOL);
	VALUE(NE_ERR_INVALID_PAGE_SIZE);
	VALUE(NE_ERR_INVALID_FLAG_VALUE);
	VALUE(NE_ERR_INVALID_ENCLAVE_CID);
	return 0;
}
